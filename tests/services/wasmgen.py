"""Wasm inputs of any size: a real component grown with a custom section (valid, still runnable)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = EXAMPLES / "hello" / "hello.wasm"
MODULE = EXAMPLES / "module" / "hello-module.wasm"


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def padded_component(total_size: int, seed: bytes = b"") -> bytes:
    """The hello component plus a custom section, `total_size` bytes in all (give `seed` for distinct digests)."""
    base = HELLO.read_bytes()
    name = b"wasm-oci-padding"
    body_len = total_size - len(base) - 1 - len(_leb128(total_size))
    body_len += len(_leb128(total_size)) - len(_leb128(body_len))
    filler = body_len - 1 - len(name) - len(seed)
    if filler < 0:
        raise ValueError(f"{total_size} bytes is too small for a padded component")
    out = base + b"\x00" + _leb128(body_len) + bytes([len(name)]) + name + seed + bytes(filler)
    assert len(out) == total_size, (len(out), total_size)
    return out
