"""The gateway's sealed routes (PROTOCOL.md 9 and 8): what a sealed client needs, and the forwarding.

- `GET /sealed/directory`: the signed directory document as the gateway fetched it (msgpack bytes); the
  client checks its signatures against its own bootstrap file, so a gateway cannot forge it.
- `GET /sealed/bootstrap`: the gateway's bootstrap file (a convenience for first use: a client that does not
  pin its own trusts the gateway's choice of network).
- `POST /sealed` with `{"node": hex node id, "sealed": base64 request}`: forwarded over a circuit to that
  node; the answer is server-sent events, `{"chunk": base64}` per sealed chunk, whether or not the client
  streams (the gateway need not know). A failure before the first chunk gets an HTTP error; after it, an
  `{"error": ...}` event ends the stream. The gateway never sees what it carries.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import trio
from quart import Blueprint, Response, request

from tp_gateway.inference_overlay import InferenceOverlay
from tp_gateway.openai_errors import ApiError, invalid_json, upstream_failure
from tp_gateway.openai_objects import json_bytes, sse_error, sse_event
from tp_gateway.overlay import OverlayError
from tp_net.protocol.sealed import SEALED_REQUEST_BYTES_MAX, sealed_node_id

NODE_ID_HEX_CHARS = 64


def parse_sealed_body(body: object) -> tuple[bytes, bytes]:
    """(node id, sealed request) from the JSON body; ApiError 400 naming the bad field."""
    if not isinstance(body, dict) or set(body) != {"node", "sealed"}:
        raise ApiError(400, 'A sealed request is {"node": hex, "sealed": base64}.', code="invalid_request")
    node, sealed = body["node"], body["sealed"]
    if not isinstance(node, str) or len(node) != NODE_ID_HEX_CHARS:
        raise ApiError(400, "node must be a node id: 64 hex digits", param="node", code="invalid_request")
    if not isinstance(sealed, str) or len(sealed) > (SEALED_REQUEST_BYTES_MAX + 2) // 3 * 4:
        raise ApiError(400, "sealed must be a base64 string of a sealed request", param="sealed")
    try:
        node_id, data = bytes.fromhex(node), base64.b64decode(sealed, validate=True)
    except (ValueError, binascii.Error):
        raise ApiError(400, "node must be hex and sealed base64", code="invalid_request") from None
    if sealed_node_id(data) != node_id:  # the node would refuse it: spare the circuit
        raise ApiError(400, "The sealed request is addressed to another node.", code="sealed_wrong_node")
    return node_id, data


def sealed_error(error: OverlayError) -> ApiError:
    if error.code == "node_not_found":
        return ApiError(404, "The directory lists no such node; fetch the directory again.", code=error.code)
    if error.code.startswith("sealed_"):
        return ApiError(400, f"The node refused the sealed request: {error}", code=error.code)
    if error.code in ("unavailable", "upstream"):
        return upstream_failure(str(error))
    return ApiError(502, f"The node refused the sealed request: {error}", code=error.code)


def add_sealed_routes(api: Blueprint, overlay: InferenceOverlay) -> None:
    routes = SealedRoutes(overlay)
    api.add_url_rule("/sealed", view_func=routes.sealed, methods=["POST"])
    api.add_url_rule("/sealed/directory", view_func=routes.sealed_directory, methods=["GET"])
    api.add_url_rule("/sealed/bootstrap", view_func=routes.sealed_bootstrap, methods=["GET"])


class SealedRoutes:
    def __init__(self, overlay: InferenceOverlay) -> None:
        self._overlay = overlay

    async def sealed_directory(self) -> Response:
        signed = self._overlay.signed_document
        if signed is None:
            raise ApiError(503, "No directory yet; retry in a few seconds.", code="no_directory")
        return Response(
            signed.encode(), mimetype="application/octet-stream", headers={"Cache-Control": "no-store"}
        )

    async def sealed_bootstrap(self) -> Response:
        return Response(json_bytes(self._overlay.bootstrap.to_json()), mimetype="application/json")

    async def sealed(self) -> Response:
        data = await request.get_data(cache=False)
        try:
            body: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise invalid_json() from None
        node_id, sealed = parse_sealed_body(body)
        chunks = self._overlay.forward_sealed(node_id, sealed)
        try:
            first = await chunks.__anext__()
        except OverlayError as exc:
            await chunks.aclose()
            raise sealed_error(exc) from None
        except StopAsyncIteration:
            raise upstream_failure("the node sent no answer") from None
        except BaseException:  # the client left before the first chunk: stop the node now
            with trio.CancelScope(shield=True):
                await chunks.aclose()
            raise
        response = Response(_events(first, chunks), mimetype="text/event-stream")
        response.timeout = None  # answers can take minutes
        return response


async def _events(first: bytes, chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    async with aclosing(chunks):
        yield sse_event({"chunk": base64.b64encode(first).decode()})
        try:
            async for chunk in chunks:
                yield sse_event({"chunk": base64.b64encode(chunk).decode()})
        except OverlayError as exc:
            yield sse_error(sealed_error(exc))
