"""Thrift's compact protocol, as Parquet footers use it: values skipped, decoded, and encoded back to the same
bytes (``tasks.splice`` rewrites a footer's row-group entries and copies the rest). A struct decodes to a list of
``(field id, type, value)``; a list to ``(element type, values)``; binary and doubles stay bytes."""

from __future__ import annotations

from typing import Any

BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, STRUCT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12

Field = tuple[int, int, Any]  # (field id, compact type, value): a decoded struct is a list of them, in order


def varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        byte = buf[i]
        i += 1
        out |= (byte & 0x7F) << shift
        if byte < 0x80:
            return out, i
        shift += 7


def put_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def list_header(buf: bytes, i: int) -> tuple[int, int, int]:
    head = buf[i]
    size, i = (head >> 4, i + 1) if head >> 4 != 15 else varint(buf, i + 1)
    return size, head & 0x0F, i


def skip(buf: bytes, i: int, kind: int) -> int:
    """The offset after a value of ``kind`` at ``i``, nothing decoded: a footer is walked to find its groups, so
    the common cases (a struct's integer and binary fields) are inline, not calls (3-10x faster)."""
    if kind == STRUCT:
        while head := buf[i]:
            i += 1
            if not head & 0xF0:  # a field id of its own
                while buf[i] & 0x80:
                    i += 1
                i += 1
            kind = head & 0x0F
            if kind in (I16, I32, I64):
                while buf[i] & 0x80:
                    i += 1
                i += 1
            elif kind == BINARY:
                size, i = varint(buf, i)
                i += size
            elif kind > BOOL_FALSE:
                i = skip(buf, i, kind)
        return i + 1
    if kind in (BOOL_TRUE, BOOL_FALSE):
        return i
    if kind == BYTE:
        return i + 1
    if kind in (I16, I32, I64):
        return varint(buf, i)[1]
    if kind == DOUBLE:
        return i + 8
    if kind == BINARY:
        size, i = varint(buf, i)
        return i + size
    if kind in (LIST, SET):
        size, element, i = list_header(buf, i)
        if element in (BOOL_TRUE, BOOL_FALSE, BYTE):
            return i + size
        if element in (I16, I32, I64):  # a column's encodings, say
            for _ in range(size):
                while buf[i] & 0x80:
                    i += 1
                i += 1
            return i
        for _ in range(size):
            i = skip(buf, i, element)
        return i
    raise ValueError(f"a Thrift type a Parquet footer does not use: {kind}")


def decode(buf: bytes, i: int, kind: int) -> tuple[Any, int]:
    if kind in (BOOL_TRUE, BOOL_FALSE):
        return kind == BOOL_TRUE, i
    if kind == BYTE:
        return buf[i], i + 1
    if kind in (I16, I32, I64):
        value, i = varint(buf, i)
        return unzigzag(value), i
    if kind == DOUBLE:
        return bytes(buf[i:i + 8]), i + 8
    if kind == BINARY:
        size, i = varint(buf, i)
        return bytes(buf[i:i + size]), i + size
    if kind in (LIST, SET):
        size, element, i = list_header(buf, i)
        if element in (BOOL_TRUE, BOOL_FALSE):
            return (element, list(buf[i:i + size])), i + size
        values = []
        for _ in range(size):
            value, i = decode(buf, i, element)
            values.append(value)
        return (element, values), i
    if kind == STRUCT:
        fields, last = [], 0
        while head := buf[i]:
            fid, i = (last + (head >> 4), i + 1) if head >> 4 else long_field_id(buf, i + 1)
            value, i = decode(buf, i, head & 0x0F)
            fields.append((fid, head & 0x0F, value))
            last = fid
        return fields, i + 1
    raise ValueError(f"a Thrift type a Parquet footer does not use: {kind}")


def _field_head(fid: int, kind: int, last: int) -> bytes:
    delta = fid - last
    return bytes([delta << 4 | kind]) if 0 < delta <= 15 else bytes([kind]) + put_varint(zigzag(fid))


def encode(kind: int, value: Any) -> bytes:
    if kind in (BOOL_TRUE, BOOL_FALSE):
        return b""
    if kind == BYTE:
        return bytes([value])
    if kind in (I16, I32, I64):
        return put_varint(zigzag(value))
    if kind == DOUBLE:
        return value
    if kind == BINARY:
        return put_varint(len(value)) + value
    if kind in (LIST, SET):
        element, values = value
        head = list_head(len(values), element)
        if element in (BOOL_TRUE, BOOL_FALSE):
            return head + bytes(values)
        return head + b"".join(encode(element, v) for v in values)
    if kind == STRUCT:
        return encode_struct(value)
    raise ValueError(f"a Thrift type a Parquet footer does not use: {kind}")


def encode_struct(fields: list[Field]) -> bytes:
    """A struct's fields (as ``decode_struct`` gives them) as bytes: a field id that follows the last by 1-15 is
    written as a delta, as Apache Thrift writes it, so a decoded footer encodes back to the same bytes."""
    out, last = bytearray(), 0
    for fid, kind, value in fields:
        if kind in (BOOL_TRUE, BOOL_FALSE):
            kind = BOOL_TRUE if value else BOOL_FALSE
        out += _field_head(fid, kind, last) + encode(kind, value)
        last = fid
    return bytes(out + b"\x00")


def decode_struct(buf: bytes) -> list[Field]:
    """A compact-protocol struct (a Parquet footer, say) decoded whole: ``encode_struct`` gives its bytes back."""
    return decode(buf, 0, STRUCT)[0]


def long_field_id(buf: bytes, i: int) -> tuple[int, int]:
    """A field id written in full (not as a delta) at ``i``, and the offset after it."""
    value, i = varint(buf, i)
    return unzigzag(value), i


def list_head(size: int, element: int) -> bytes:
    """A list's header: its size and its elements' type."""
    return bytes([size << 4 | element]) if size < 15 else bytes([0xF0 | element]) + put_varint(size)


def next_i64(value: int) -> bytes:
    """An i64 field whose id follows the previous field's: its header and value."""
    return bytes([1 << 4 | I64]) + put_varint(zigzag(value))
