"""The WebAssembly binary format's pieces more than one layer needs: the header (a core module
or a component, told apart without parsing) and LEB128 integers (WebAssembly's, which are
protobuf's varints too).

Shared by packaging (oci.wasminfo), the engine and the shim's hand-made protobuf (shim/wire.py,
on `start`'s and `delete`'s path: nothing here imports typing at run time).
"""

from __future__ import annotations

from wasm_oci.errors import InvalidWasm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Kind = Literal["component", "module"]

_MAGIC = b"\0asm"
_MODULE_VERSION = b"\x01\x00\x00\x00"
_COMPONENT_LAYER = b"\x01\x00"


def uleb128(value: int) -> bytes:
    """An unsigned LEB128 integer (a protobuf varint)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sniff(data: bytes) -> Kind:
    """Classify by header alone; cheap enough for every pull and run."""
    if len(data) < 8 or data[:4] != _MAGIC:
        raise InvalidWasm("not a WebAssembly binary (missing \\0asm magic)")
    if data[4:8] == _MODULE_VERSION:
        return "module"
    if data[6:8] == _COMPONENT_LAYER:
        return "component"
    raise InvalidWasm(f"unsupported WebAssembly binary version {data[4:8].hex()}")
