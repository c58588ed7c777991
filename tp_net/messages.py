"""Messages on a stream: each is a 4-byte big-endian length and a msgpack document (tp_net.codec).

A request is one message from the client; a response is any number of messages (chunks) from the service.
"""

from __future__ import annotations

from typing import Any

from tp_crypto.errors import RemoteProtocolError
from tp_net import codec

_LENGTH_BYTES = 4
# A request's document, in encoded bytes: the most a service accepts on one stream, and the gateway's
# largest body.
REQUEST_BYTES_MAX = 1024 * 1024


def encode_message(document: Any) -> bytes:
    data = codec.encode_document(document)
    return len(data).to_bytes(_LENGTH_BYTES, "big") + data


class MessageReader:
    """Reassembles messages from stream data that arrives in arbitrary pieces."""

    def __init__(self, message_bytes_max: int = codec.DOCUMENT_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._message_bytes_max = message_bytes_max

    def feed(self, data: bytes) -> list[Any]:
        """Add data; return the documents it completed. RemoteProtocolError for oversized or bad ones."""
        self._buffer += data
        documents = []
        while len(self._buffer) >= _LENGTH_BYTES:
            length = int.from_bytes(self._buffer[:_LENGTH_BYTES], "big")
            if length > self._message_bytes_max:
                raise RemoteProtocolError(
                    f"stream message of {length} bytes exceeds {self._message_bytes_max}"
                )
            end = _LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            documents.append(codec.decode_document(bytes(self._buffer[_LENGTH_BYTES:end])))
            del self._buffer[:end]
        return documents

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete message (non-zero at the end of a stream means it was cut short)."""
        return len(self._buffer)
