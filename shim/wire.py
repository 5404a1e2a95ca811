"""The few protobuf messages `start` and `delete` read and write, encoded by hand.

`delete` prints a DeleteResponse and `start` reads its runtime options (an Any) on stdin.
Importing protobuf and the generated modules costs ~20 ms, more than the rest of either
command, so these stay in wire format: varints and length-delimited fields only.
"""

from __future__ import annotations

from wasm_oci.binary import uleb128 as varint

TYPE_CHECKING = False  # typing and collections.abc cost milliseconds to import here
if TYPE_CHECKING:
    from collections.abc import Iterator

VARINT, LENGTH = 0, 2


def field_varint(number: int, value: int) -> bytes:
    """A varint field; zero (the proto3 default) is omitted."""
    return varint(number << 3 | VARINT) + varint(value) if value else b""


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | LENGTH) + varint(len(value)) + value if value else b""


def timestamp(ns: int) -> bytes:
    """A google.protobuf.Timestamp."""
    return field_varint(1, ns // 1_000_000_000) + field_varint(2, ns % 1_000_000_000)


def delete_response(pid: int, exit_status: int, exited_at_ns: int) -> bytes:
    """containerd.task.v3.DeleteResponse{pid=1, exit_status=2, exited_at=3}."""
    return field_varint(1, pid) + field_varint(2, exit_status) + field_bytes(3, timestamp(exited_at_ns))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for the varint and length-delimited fields of a message;
    ValueError on anything else or on truncated input."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, pos = _read_varint(data, pos)
            yield number, value
        elif kind == LENGTH:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected wire type {kind}")
