"""The inference service's contract (docs/PROTOCOL.md section 6): its name, the request document's fields and
every limit on them, sans-IO.

One home for what the gateway and the node must agree on: the node checks a request document against these
(`tp_node.inference.parse_request`), and the gateway applies the same limits to the OpenAI body it turns into
that document (`tp_gateway.openai_requests`), so a request the gateway accepts is one the node serves. The
rules both sides run word for word (`n`, `logprobs`, `logit_bias`) are here too; they raise EngineError,
whose `code` names the field.
"""

from __future__ import annotations

import re

from tp_net.errors import ServiceError

INFERENCE_SERVICE = "inference"

KINDS = ("chat", "completion", "embedding")
ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")

MODEL_ID_CHARS_MAX = 128
MESSAGES_MAX = 1024
STOP_SEQUENCES_MAX = 4
STOP_SEQUENCE_CHARS_MAX = 256
EMBEDDING_INPUTS_MAX = 256
TOOLS_MAX = 128
TOOL_NAME_CHARS_MAX = 64  # tool and response-format schema names
TOOL_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{TOOL_NAME_CHARS_MAX}}}")
MAX_TOKENS_LIMIT = 100_000
SEED_ABS_MAX = 2**64
# name -> (lowest, highest) of the sampling numbers (OpenAI's ranges).
SAMPLING_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
CHOICES_MAX = 8  # each choice is a whole generation on the request's slot, one after the other
TOP_LOGPROBS_MAX = 20  # alternatives per token (OpenAI's own limit)
LOGIT_BIAS_ENTRIES_MAX = 300
LOGIT_BIAS_ABS_MAX = 100.0
TOKEN_ID_MAX = 2**31 - 1  # llama.cpp's llama_token is an int32; the engine checks against the vocabulary
TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,9}")

# `pad`: a string the node ignores, which brings the request to a size bucket (tp_net.traffic_shaping); a
# response message that is only {`pad`: string} is a dummy the client drops.
PAD_FIELD = "pad"
COMMON_FIELDS = frozenset({"kind", "model", PAD_FIELD})
GENERATION_FIELDS = frozenset(
    {"max_tokens", "stop", "seed", *SAMPLING_RANGES} | {"n", "logprobs", "logit_bias"}
)
FIELDS_BY_KIND = {
    "chat": COMMON_FIELDS
    | GENERATION_FIELDS
    | {"messages", "response_format", "tools", "tool_choice", "parallel_tool_calls"},
    "completion": COMMON_FIELDS | GENERATION_FIELDS | {"prompt"},
    "embedding": COMMON_FIELDS | {"input"},
}
MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})


class EngineError(ServiceError):
    """A request the engine cannot serve; `code` is machine-readable, the message safe to show."""


def check_n(value: object) -> int:
    """`n`: how many choices (None: one)."""
    if value is None:
        return 1
    if type(value) is not int or not 1 <= value <= CHOICES_MAX:
        raise EngineError("invalid_n", f"n must be an integer in 1..{CHOICES_MAX}")
    return value


def check_top_logprobs(value: object) -> int:
    """How many alternatives to return with each token's log probability."""
    if type(value) is not int or not 0 <= value <= TOP_LOGPROBS_MAX:
        raise EngineError("invalid_logprobs", f"logprobs must be an integer in 0..{TOP_LOGPROBS_MAX}")
    return value


def check_logit_bias(value: object) -> dict[int, float]:
    """{token id as a decimal string: bias}; None or {} is no bias."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > LOGIT_BIAS_ENTRIES_MAX:
        raise EngineError(
            "invalid_logit_bias", f"logit_bias must be a map of at most {LOGIT_BIAS_ENTRIES_MAX} entries"
        )
    biases: dict[int, float] = {}
    for key, bias in value.items():
        if not (isinstance(key, str) and TOKEN_ID.fullmatch(key) and int(key) <= TOKEN_ID_MAX):
            raise EngineError(
                "invalid_logit_bias", "logit_bias keys must be token ids (decimal integer strings)"
            )
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not abs(bias) <= LOGIT_BIAS_ABS_MAX:
            raise EngineError(
                "invalid_logit_bias",
                f"logit_bias values must be numbers in -{LOGIT_BIAS_ABS_MAX:g}..{LOGIT_BIAS_ABS_MAX:g}",
            )
        biases[int(key)] = float(bias)
    return biases
