"""The OpenAI HTTP API <-> the overlay's inference documents, sans-IO: one import for the gateway's HTTP side.

Requests: `parse_chat`/`parse_completion`/`parse_embedding` turn a parsed JSON body into a call whose
`document()` goes to a GPU node. Responses: the stream and collector classes turn the node's chunk documents
into OpenAI objects; `sse_event`/`SSE_DONE`/`sse_error` frame a stream. Every failure is an ApiError.
"""

from __future__ import annotations

from tp_gateway.openai_errors import (
    ApiError,
    body_too_large,
    invalid_api_key,
    invalid_json,
    model_not_found,
    no_capacity,
    node_error_document_to_api,
    node_error_to_api,
    unknown_route,
    upstream_failure,
)
from tp_gateway.openai_objects import (
    OWNER,
    SSE_DONE,
    embeddings_response,
    json_bytes,
    model_list,
    model_object,
    sse_error,
    sse_event,
)
from tp_gateway.openai_requests import (
    ApiCall,
    ChatCall,
    CompletionCall,
    EmbeddingCall,
    parse_chat,
    parse_completion,
    parse_embedding,
)
from tp_gateway.openai_responses import (
    ChatCompletionCollector,
    ChatCompletionStream,
    CompletionCollector,
    CompletionStream,
)

__all__ = [
    "OWNER",
    "SSE_DONE",
    "ApiCall",
    "ApiError",
    "ChatCall",
    "ChatCompletionCollector",
    "ChatCompletionStream",
    "CompletionCall",
    "CompletionCollector",
    "CompletionStream",
    "EmbeddingCall",
    "body_too_large",
    "embeddings_response",
    "invalid_api_key",
    "invalid_json",
    "json_bytes",
    "model_list",
    "model_not_found",
    "model_object",
    "no_capacity",
    "node_error_document_to_api",
    "node_error_to_api",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
    "sse_error",
    "sse_event",
    "unknown_route",
    "upstream_failure",
]
