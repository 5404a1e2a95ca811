"""Reading a component's binary without compiling it: its top-level sections, names and sorts.

Compiling a component takes from milliseconds to tens of seconds (componentize-py's are ~20 MB);
what it exports decides how it is run (a wasi:cli command, or a wasi:http proxy) and how it is
compiled (polls.py wraps commands that wait), so that is read here first.
"""

from __future__ import annotations

HEADER = b"\0asm\x0d\x00\x01\x00"
EXPORT_SECTION = 11
FUNC, VALUE, TYPE, COMPONENT, INSTANCE = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


def leb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def read_name(data: bytes, at: int) -> tuple[str, int]:
    length, at = leb(data, at)
    return data[at : at + length].decode(), at + length


def read_sort(data: bytes, at: int) -> tuple[bytes, int]:
    return (data[at : at + 2], at + 2) if data[at] == 0 else (data[at : at + 1], at + 1)


def skip_externdesc(data: bytes, at: int) -> tuple[bytes, int]:
    """The sort of an extern description, and where it ends."""
    sort, at = read_sort(data, at)
    if sort in (VALUE, TYPE):
        bound, at = data[at], at + 1
        if sort == TYPE and bound == 1:  # (sub resource)
            return sort, at
    _, at = leb(data, at)  # a type index, or a value type (a primitive's one byte, or an index)
    return sort, at


def sections(wasm: bytes) -> list[tuple[int, int, int]]:
    """(id, start of contents, end) of each top-level section."""
    found, at = [], len(HEADER)
    while at < len(wasm):
        kind = wasm[at]
        size, start = leb(wasm, at + 1)
        found.append((kind, start, start + size))
        at = start + size
    return found


def read_exports(wasm: bytes, start: int) -> tuple[list[tuple[str, bytes]], int]:
    """The (name, sort) of each export of the export section whose contents start at `start`,
    and where it ends; ValueError for a name form this reader does not know."""
    exports: list[tuple[str, bytes]] = []
    entries, at = leb(wasm, start)
    for _ in range(entries):
        if wasm[at] != 0:
            raise ValueError("an export name with a version suffix")
        name, at = read_name(wasm, at + 1)
        sort, at = read_sort(wasm, at)
        _, at = leb(wasm, at)
        ascribed, at = wasm[at], at + 1
        if ascribed:
            _, at = skip_externdesc(wasm, at)
        exports.append((name, sort))
    return exports, at


def exports(wasm: bytes) -> tuple[str, ...] | None:
    """The names a component exports at its top level; None when `wasm` is no component this
    reader can read (wasmtime then has the last word)."""
    if not wasm.startswith(HEADER):
        return None
    try:
        return tuple(name for kind, start, _ in sections(wasm) if kind == EXPORT_SECTION for name, _ in read_exports(wasm, start)[0])
    except (IndexError, UnicodeDecodeError, ValueError):
        return None
