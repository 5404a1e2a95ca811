"""RunSpec -> WasiConfig: the guest's whole view of the host.

A fresh WasiConfig inherits nothing: no argv, env, stdio, files or network unless set here.
The network is never granted (wasmtime-py 50's C API leaves TCP sockets denied even after
`wasi_config_inherit_network`), so the guest's sockets are always refused.
"""

from __future__ import annotations

from pathlib import Path

import wasmtime

from wasm_oci.engine import ffi
from wasm_oci.engine.spec import INHERIT, Inherit, RunSpec
from wasm_oci.errors import NotFound


def wasi_config(spec: RunSpec) -> wasmtime.WasiConfig:
    """A config that already holds the stdio files it opened: closed here if a later step
    fails, so a failed setup leaves no descriptor behind for the garbage collector."""
    config = wasmtime.WasiConfig()
    try:
        config.argv = list(spec.args)
        config.env = list(spec.env.items())
        _stream(config, "stdin", spec.stdin)
        _stream(config, "stdout", spec.stdout)
        _stream(config, "stderr", spec.stderr)
        for preopen in spec.preopens:
            if not preopen.host.is_dir():
                raise NotFound(f"preopen {preopen.host}: no such directory")
            try:
                config.preopen_dir(str(preopen.host), preopen.guest, not preopen.read_only)
            except wasmtime.WasmtimeError:
                raise NotFound(f"preopen {preopen.host}: cannot open") from None
    except BaseException:
        config.close()
        raise
    return config


def _stream(config: wasmtime.WasiConfig, name: str, value: Path | bytes | Inherit | None) -> None:
    if value is None:
        return
    if value == INHERIT:
        getattr(config, f"inherit_{name}")()
    elif isinstance(value, bytes):
        ffi.set_stdin_bytes(config, value)
    else:
        try:
            setattr(config, f"{name}_file", str(value))
        except wasmtime.WasmtimeError:  # Wasmtime only says "failed to set ...": name the path
            raise NotFound(f"{name} {value}: cannot open") from None
