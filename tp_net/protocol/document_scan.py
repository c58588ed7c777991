"""Walks a msgpack document's headers without building any value, so that tp_net.protocol.codec can refuse a
document before msgpack allocates for it.

Decoded, a document is larger than its bytes: an empty map is 1 byte in and ~80 bytes of dict out, a small
negative int 1 byte in and ~36 out. So, beyond small allowances, a document may hold one value per
DOCUMENT_BYTES_PER_VALUE_MIN of its bytes and one map or array per DOCUMENT_BYTES_PER_CONTAINER_MIN: decoding
then takes at most ~20 bytes of memory per byte (honest chat requests take ~13). Honest documents (chat
messages, tool schemas, response chunks) use well over 16 bytes per container.
"""

from __future__ import annotations

from tp_crypto.errors import RemoteProtocolError

DOCUMENT_DEPTH_MAX = 32
DOCUMENT_BYTES_PER_VALUE_MIN = 2
DOCUMENT_VALUES_FREE = 1024
DOCUMENT_BYTES_PER_CONTAINER_MIN = 16
DOCUMENT_CONTAINERS_FREE = 64


def document_values_max(document_bytes: int) -> int:
    """The most values (scalars, map keys, maps and arrays) a document of `document_bytes` may hold."""
    return DOCUMENT_VALUES_FREE + document_bytes // DOCUMENT_BYTES_PER_VALUE_MIN


def document_containers_max(document_bytes: int) -> int:
    """The most maps and arrays a document of `document_bytes` may hold."""
    return DOCUMENT_CONTAINERS_FREE + document_bytes // DOCUMENT_BYTES_PER_CONTAINER_MIN


# What each msgpack type byte starts: (kind, count, bytes of a length field, bytes of fixed payload). For a
# string or blob the count is its length, for an array its items, for a map its entries; a length field, when
# there is one, gives the count.
_SCALAR, _BLOB, _STR, _ARRAY, _MAP, _REFUSED = range(6)
_SIZED: dict[int, tuple[int, int, int, int]] = {
    0xC0: (_SCALAR, 0, 0, 0),  # nil, false, true
    0xC2: (_SCALAR, 0, 0, 0),
    0xC3: (_SCALAR, 0, 0, 0),
    0xC4: (_BLOB, 0, 1, 0),  # bin 8/16/32
    0xC5: (_BLOB, 0, 2, 0),
    0xC6: (_BLOB, 0, 4, 0),
    0xCA: (_SCALAR, 0, 0, 4),  # float 32/64
    0xCB: (_SCALAR, 0, 0, 8),
    0xCC: (_SCALAR, 0, 0, 1),  # uint 8..64
    0xCD: (_SCALAR, 0, 0, 2),
    0xCE: (_SCALAR, 0, 0, 4),
    0xCF: (_SCALAR, 0, 0, 8),
    0xD0: (_SCALAR, 0, 0, 1),  # int 8..64
    0xD1: (_SCALAR, 0, 0, 2),
    0xD2: (_SCALAR, 0, 0, 4),
    0xD3: (_SCALAR, 0, 0, 8),
    0xD9: (_STR, 0, 1, 0),  # str 8/16/32
    0xDA: (_STR, 0, 2, 0),
    0xDB: (_STR, 0, 4, 0),
    0xDC: (_ARRAY, 0, 2, 0),  # array 16/32
    0xDD: (_ARRAY, 0, 4, 0),
    0xDE: (_MAP, 0, 2, 0),  # map 16/32
    0xDF: (_MAP, 0, 4, 0),
}


def _type_of(byte: int) -> tuple[int, int, int, int]:
    if byte <= 0x7F or byte >= 0xE0:
        return (_SCALAR, 0, 0, 0)  # fixints
    if byte <= 0x8F:
        return (_MAP, byte & 0x0F, 0, 0)
    if byte <= 0x9F:
        return (_ARRAY, byte & 0x0F, 0, 0)
    if byte <= 0xBF:
        return (_STR, byte & 0x1F, 0, 0)
    return _SIZED.get(byte, (_REFUSED, 0, 0, 0))  # the unused byte and the extension types


_TYPES = [_type_of(byte) for byte in range(256)]


def _check_container(values: int, bytes_left: int, depth: int) -> None:
    """A container of `values` values, opened at `depth` with `bytes_left` bytes after its header."""
    if values > bytes_left:  # every value takes at least a byte
        raise RemoteProtocolError("malformed document (a container longer than the document)")
    if depth >= DOCUMENT_DEPTH_MAX:
        raise RemoteProtocolError(f"document nests deeper than {DOCUMENT_DEPTH_MAX}")


def scan_document(data: bytes) -> None:
    """Walk a document's msgpack headers without building any value: RemoteProtocolError for a document
    nested deeper than DOCUMENT_DEPTH_MAX, with more values or containers than document_values_max and
    document_containers_max allow, with a map key that is not a string, or that is truncated or followed by
    more bytes."""
    size = len(data)
    values_left = document_values_max(size)
    containers_left = document_containers_max(size)
    # Per open container: [values still to read, whether it is a map]; the document itself is one value.
    open_levels: list[list[int]] = [[1, 0]]
    offset = 0
    while open_levels:
        level = open_levels[-1]
        if level[0] == 0:
            open_levels.pop()
            continue
        is_key = level[1] and level[0] % 2 == 0
        level[0] -= 1
        values_left -= 1
        if values_left < 0:
            raise RemoteProtocolError(f"document holds more than {document_values_max(size)} values")
        if offset >= size:
            raise RemoteProtocolError("malformed document (it ends in the middle of a value)")
        kind, count, length_bytes, fixed_bytes = _TYPES[data[offset]]
        offset += 1
        if length_bytes:
            count = int.from_bytes(data[offset : offset + length_bytes], "big")
            offset += length_bytes
        offset += fixed_bytes
        if kind == _REFUSED:
            raise RemoteProtocolError(f"malformed document (msgpack type 0x{data[offset - 1]:02x})")
        if is_key and kind != _STR:
            raise RemoteProtocolError("document map keys must be strings")
        if kind in (_STR, _BLOB):
            offset += count
        elif kind in (_ARRAY, _MAP):
            containers_left -= 1
            if containers_left < 0:
                raise RemoteProtocolError(
                    f"document holds more than {document_containers_max(size)} maps and arrays"
                )
            values = count * 2 if kind == _MAP else count
            if values:
                _check_container(values, size - offset, len(open_levels))
                open_levels.append([values, int(kind == _MAP)])
    if offset != size:
        raise RemoteProtocolError("malformed document (bytes after its value)")
