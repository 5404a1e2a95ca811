"""The WebAssembly binary header: a core module or a component, told apart without parsing.

Shared by packaging (oci.wasminfo) and the engine, which must not depend on each other.
"""

from __future__ import annotations

from typing import Literal

from wasm_oci.errors import InvalidWasm

_MAGIC = b"\0asm"
_MODULE_VERSION = b"\x01\x00\x00\x00"
_COMPONENT_LAYER = b"\x01\x00"

Kind = Literal["component", "module"]


def sniff(data: bytes) -> Kind:
    """Classify by header alone; cheap enough for every pull and run."""
    if len(data) < 8 or data[:4] != _MAGIC:
        raise InvalidWasm("not a WebAssembly binary (missing \\0asm magic)")
    if data[4:8] == _MODULE_VERSION:
        return "module"
    if data[6:8] == _COMPONENT_LAYER:
        return "component"
    raise InvalidWasm(f"unsupported WebAssembly binary version {data[4:8].hex()}")
