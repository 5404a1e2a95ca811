"""Wasm bytes -> a Program ready to enter: compiled (or taken from the precompile cache), its
imports resolved against WASI, its entry point (`wasi:cli/run` or `_start`) found once. A
component importing wasi:io/poll is compiled wrapped, so that a stop ends its waits (polls.py).

All per-program work happens here so that a run only instantiates and enters.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import wasmtime
import wasmtime.component as wc

from wasm_oci.binary import sniff
from wasm_oci.engine import cache, clocks, component_binary, ffi, polls
from wasm_oci.engine.cache import CompileCache, CorruptEntry
from wasm_oci.errors import InvalidWasm, NoEntryPoint, UnsatisfiedImport

Kind = Literal["component", "module"]
CacheState = Literal["memory", "hit", "miss", "rebuilt"]
"""memory: this Engine had it; hit: deserialized from disk; miss: compiled; rebuilt: compiled
because the disk entry was corrupt or incompatible."""

_RUN_EXPORT = "wasi:cli/run@"
_MISSING_IMPORT = re.compile(r"(?:component imports \w+ `([^`]+)`, but a matching implementation was not found|unknown import: `([^`]+)`)")


class _Entry(Protocol):
    def instantiate(self, store: wasmtime.Store) -> Callable[[], int]:
        """Instantiate into `store`; calling the result runs the guest and gives its exit status."""


@dataclass(frozen=True)
class Program:
    name: str
    digest: str
    kind: Kind
    cache: CacheState
    load_seconds: float
    entry: _Entry = field(repr=False)


class _ComponentEntry:
    def __init__(self, linker: wc.Linker, component: wc.Component, run: wc.ExportIndex) -> None:
        self.linker, self.component, self.run = linker, component, run

    def instantiate(self, store: wasmtime.Store) -> Callable[[], int]:
        instance = self.linker.instantiate(store, self.component)
        run = instance.get_func(store, self.run)
        assert run is not None  # the index came from this component's own exports
        return lambda: 0 if ffi.call_run(run, store) else 1


class _ModuleEntry:
    def __init__(self, pre: wasmtime.InstancePre) -> None:
        self.pre = pre

    def instantiate(self, store: wasmtime.Store) -> Callable[[], int]:
        start = self.pre.instantiate(store).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)  # checked at load

        def run() -> int:
            start(store)
            return 0  # returning from _start is exit status 0; proc_exit raises ExitTrap

        return run


def wasmtime_version() -> str:
    """wasmtime's distribution version, read from its dist-info folder's name beside the package:
    importlib.metadata would add ~15 ms of imports to every `wasm-oci run`."""
    for info in Path(wasmtime.__file__).parent.parent.glob("wasmtime-*.dist-info"):
        return info.name.removeprefix("wasmtime-").removesuffix(".dist-info")
    from importlib.metadata import version

    return version("wasmtime")


def unsatisfied_import(error: Exception, name: str) -> UnsatisfiedImport | None:
    """Wasmtime's 'no implementation for import X' as a one-line error naming X, else None."""
    found = _MISSING_IMPORT.search(str(error))
    if not found:
        return None
    missing = found.group(1) or found.group(2)
    return UnsatisfiedImport(f"{name} imports `{missing}`, which this host does not provide (it provides WASI 0.2 and preview 1)")


def _refuse_proxy(exports: Iterable[str], name: str) -> None:
    """NoEntryPoint for a wasi:http proxy (it answers requests, it has nothing to run once)."""
    names = list(exports)
    if any(export.startswith("wasi:http/incoming-handler@") for export in names) and not any(
        export.startswith(_RUN_EXPORT) for export in names
    ):
        raise NoEntryPoint(
            f"{name}: a wasi:http proxy component (exports: {', '.join(names)}): it answers requests; serve it with `wasm-oci serve`"
        )


class Loader:
    """Compiles or deserializes programs for one wasmtime.Engine with its WASI linkers."""

    def __init__(self, engine: wasmtime.Engine, settings: str, cache: CompileCache) -> None:
        self.engine = engine
        self.cache = cache
        self.build = (f"wasmtime {wasmtime_version()}", platform.machine(), settings, polls.WRAPPER)
        """Everything besides the wasm that shapes the compiled code: part of each cache key."""
        self.component_linker = wc.Linker(engine)
        self.component_linker.add_wasip2()
        self.module_linker = wasmtime.Linker(engine)
        self.module_linker.define_wasi()
        clocks.PollOneoff(engine).install(self.module_linker)  # a stop cuts a module's sleep short

    def cache_key(self, digest: str, kind: Kind) -> str:
        return cache.key(digest, kind, self.build)

    def load(self, wasm: bytes, digest: str, name: str) -> Program:
        """`digest`: the sha256 of `wasm`, as the caller verified or computed it."""
        started = time.perf_counter()
        try:
            kind: Kind = sniff(wasm)
        except InvalidWasm as exc:
            raise InvalidWasm(f"{name}: {exc}") from None
        if kind == "component":
            _refuse_proxy(component_binary.exports(wasm) or (), name)  # before a compile that would be wasted
        key = self.cache_key(digest, kind)
        compiled, state = self._cached(key, kind)
        if compiled is None:
            compiled = self._compile(wasm, kind, name)
            self.cache.put(key, bytes(compiled.serialize()))
        entry = self._entry(compiled, name) if isinstance(compiled, wc.Component) else self._module_entry(compiled, name)
        return Program(name, digest, kind, state, time.perf_counter() - started, entry)

    def _cached(self, key: str, kind: Kind) -> tuple[wc.Component | wasmtime.Module | None, CacheState]:
        try:
            artifact = self.cache.get(key)
        except CorruptEntry:
            return None, "rebuilt"
        if artifact is None:
            return None, "miss"
        try:
            if kind == "component":
                return wc.Component.deserialize(self.engine, artifact), "hit"
            return wasmtime.Module.deserialize(self.engine, artifact), "hit"
        except wasmtime.WasmtimeError:  # another wasmtime, other settings or CPU features
            self.cache.discard(key)
            return None, "rebuilt"

    def _compile(self, wasm: bytes, kind: Kind, name: str) -> wc.Component | wasmtime.Module:
        wrapped = polls.wrap(wasm) if kind == "component" else None
        if wrapped is not None:
            try:
                return wc.Component(self.engine, wrapped)
            except wasmtime.WasmtimeError:
                pass  # an invalid component (or a shape the wrapper misses): as it is, for its own error
        try:
            return wc.Component(self.engine, wasm) if kind == "component" else wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise InvalidWasm(f"{name}: invalid WebAssembly {kind}: {lines[-1] if lines else 'rejected by wasmtime'}") from None

    def _entry(self, component: wc.Component, name: str) -> _ComponentEntry:
        exports = list(component.type.exports(self.engine))
        interface = next((export for export in exports if export.startswith(_RUN_EXPORT)), None)
        outer = component.get_export_index(interface) if interface else None
        run = component.get_export_index("run", outer) if outer else None
        if run is None:
            _refuse_proxy(exports, name)
            raise NoEntryPoint(f"{name}: component exports no wasi:cli/run (exports: {', '.join(exports) or 'none'})")
        return _ComponentEntry(self.component_linker, component, run)

    def _module_entry(self, module: wasmtime.Module, name: str) -> _ModuleEntry:
        if not any(export.name == "_start" and isinstance(export.type, wasmtime.FuncType) for export in module.exports):
            raise NoEntryPoint(f"{name}: module exports no _start function")
        try:
            return _ModuleEntry(self.module_linker.instantiate_pre(module))
        except wasmtime.WasmtimeError as exc:
            raise unsatisfied_import(exc, name) or InvalidWasm(f"{name}: {exc}") from None
