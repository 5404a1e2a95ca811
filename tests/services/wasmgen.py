"""Wasm inputs of any size: a real component grown with a custom section (valid, still runnable)."""

from __future__ import annotations

from pathlib import Path

from wasm_oci.binary import uleb128 as varint  # wasm section sizes are LEB128

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = EXAMPLES / "hello" / "hello.wasm"
MODULE = EXAMPLES / "module" / "hello-module.wasm"


def padded_component(total_size: int, seed: bytes = b"") -> bytes:
    """The hello component plus a custom section, `total_size` bytes in all (give `seed` for distinct digests)."""
    base = HELLO.read_bytes()
    name = b"wasm-oci-padding"
    body_len = total_size - len(base) - 1 - len(varint(total_size))
    body_len += len(varint(total_size)) - len(varint(body_len))
    filler = body_len - 1 - len(name) - len(seed)
    if filler < 0:
        raise ValueError(f"{total_size} bytes is too small for a padded component")
    out = base + b"\x00" + varint(body_len) + bytes([len(name)]) + name + seed + bytes(filler)
    assert len(out) == total_size, (len(out), total_size)
    return out
