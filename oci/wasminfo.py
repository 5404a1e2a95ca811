"""What a .wasm file is: a core module or a component, and the component's world.

The world (imports, exports, and the WASI world it targets) goes into the artifact config so
registries, `inspect` and runtimes can tell what a component needs without compiling it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wasm_oci.binary import sniff
from wasm_oci.errors import InvalidWasm

# Which export makes a component a command or an HTTP handler, and the world that names it.
_TARGETS = (
    ("wasi:cli/run@", "wasi:cli/command"),
    ("wasi:http/incoming-handler@", "wasi:http/proxy"),
)


@dataclass(frozen=True)
class WasmInfo:
    kind: Literal["component", "module"]
    imports: tuple[str, ...]
    exports: tuple[str, ...]
    target: str | None

    @property
    def is_proxy(self) -> bool:
        """A wasi:http proxy and nothing else: it can only be served (an HTTP function by its world)."""
        return bool(self.target and self.target.startswith("wasi:http/proxy@"))

    @property
    def os(self) -> str:
        """The OCI platform `os`: wasip2 for components, wasip1 for core modules (CNCF Wasm artifact spec)."""
        return "wasip2" if self.kind == "component" else "wasip1"


def _target(exports: tuple[str, ...]) -> str | None:
    for prefix, world in _TARGETS:
        for name in exports:
            if name.startswith(prefix):
                return f"{world}@{name.rsplit('@', 1)[1]}"
    return None


def inspect(data: bytes) -> WasmInfo:
    """Validate the binary with wasmtime and read its imports and exports."""
    import wasmtime
    import wasmtime.component

    kind = sniff(data)
    engine = wasmtime.Engine()
    try:
        if kind == "component":
            ctype = wasmtime.component.Component(engine, data).type
            imports = tuple(sorted(ctype.imports(engine)))
            exports = tuple(sorted(ctype.exports(engine)))
        else:
            module = wasmtime.Module(engine, data)
            imports = tuple(sorted({f"{i.module}" for i in module.imports}))
            exports = tuple(sorted(e.name for e in module.exports))
    except wasmtime.WasmtimeError as exc:
        detail = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InvalidWasm(f"invalid WebAssembly {kind}: {detail[-1] if detail else 'rejected by wasmtime'}") from None
    return WasmInfo(kind, imports, exports, _target(exports) if kind == "component" else None)
