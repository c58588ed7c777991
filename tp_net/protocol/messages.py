"""Messages on a stream: each is a 4-byte big-endian length and a msgpack document (tp_net.protocol.codec).

A request is one message from the client; a response is any number of messages (chunks) from the service.
Both readers check their byte budgets as bytes arrive, before buffering them; a document is decoded only once
it is whole (and tp_net.protocol.codec checks its shape before building it).
"""

from __future__ import annotations

from typing import Any

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol import codec

_MESSAGE_LENGTH_BYTES = 4
# A request's document, in encoded bytes: the most a service accepts on one stream, and the gateway's
# largest body.
REQUEST_BYTES_MAX = 1024 * 1024


def encode_message(document: Any) -> bytes:
    data = codec.encode_document(document)
    return len(data).to_bytes(_MESSAGE_LENGTH_BYTES, "big") + data


def encode_request(document: Any) -> bytes:
    """A request message; LocalProtocolError for one over REQUEST_BYTES_MAX (the service would refuse it and
    tear the circuit down)."""
    data = codec.encode_document(document)
    if len(data) > REQUEST_BYTES_MAX:
        raise LocalProtocolError(f"request of {len(data)} bytes exceeds {REQUEST_BYTES_MAX}")
    return len(data).to_bytes(_MESSAGE_LENGTH_BYTES, "big") + data


def _announced_length(buffer: bytes | bytearray, message_bytes_max: int) -> int | None:
    """The length a message's header announces (None while the header is incomplete)."""
    if len(buffer) < _MESSAGE_LENGTH_BYTES:
        return None
    length = int.from_bytes(buffer[:_MESSAGE_LENGTH_BYTES], "big")
    if length > message_bytes_max:
        raise RemoteProtocolError(f"stream message of {length} bytes exceeds {message_bytes_max}")
    return length


class MessageReader:
    """Reassembles messages from stream data that arrives in arbitrary pieces (a response's chunks)."""

    def __init__(
        self, message_bytes_max: int = codec.DOCUMENT_BYTES_MAX, *, stream_bytes_max: int | None = None
    ) -> None:
        self._buffer = bytearray()
        self._message_bytes_max = message_bytes_max
        self._stream_bytes_left = stream_bytes_max

    def feed(self, data: bytes) -> list[Any]:
        """Add data; return the documents it completed. RemoteProtocolError for oversized or bad ones, or
        once the stream's data exceeds `stream_bytes_max` (checked before the data is kept)."""
        if self._stream_bytes_left is not None:
            self._stream_bytes_left -= len(data)
            if self._stream_bytes_left < 0:
                raise RemoteProtocolError("stream carries more data than its budget")
        self._buffer += data
        documents = []
        while (length := _announced_length(self._buffer, self._message_bytes_max)) is not None:
            end = _MESSAGE_LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            documents.append(codec.decode_document(bytes(self._buffer[_MESSAGE_LENGTH_BYTES:end])))
            del self._buffer[:end]
        return documents

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete message (non-zero at the end of a stream means it was cut short)."""
        return len(self._buffer)


class RequestReader:
    """Collects a request: exactly one message of at most `message_bytes_max` bytes. Data past that message
    or that size is refused as it arrives, before it is kept; the document is decoded only when asked for
    (once the stream ended), so a request whose stream never ends is never decoded."""

    def __init__(self, message_bytes_max: int = REQUEST_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._message_bytes_max = message_bytes_max

    def feed(self, data: bytes) -> None:
        """Add data; RemoteProtocolError when it goes past the message or the size limit."""
        length = _announced_length(self._buffer, self._message_bytes_max)
        if length is None:  # the header is still incomplete: look at it with this data's first bytes
            length = _announced_length(self._buffer + data[:_MESSAGE_LENGTH_BYTES], self._message_bytes_max)
        limit = _MESSAGE_LENGTH_BYTES + (self._message_bytes_max if length is None else length)
        if len(self._buffer) + len(data) > limit:
            raise RemoteProtocolError("a request is one message, and this stream carries more")
        self._buffer += data

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def document(self) -> Any:
        """The request's document; RemoteProtocolError if the message is incomplete or malformed."""
        length = _announced_length(self._buffer, self._message_bytes_max)
        if length is None or len(self._buffer) != _MESSAGE_LENGTH_BYTES + length:
            raise RemoteProtocolError("the request message is incomplete")
        return codec.decode_document(bytes(self._buffer[_MESSAGE_LENGTH_BYTES:]))
