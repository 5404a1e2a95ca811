"""RunSpec -> WasiConfig: the guest's whole view of the host.

A fresh WasiConfig inherits nothing: no argv, env, stdio, files or network unless set here.
The network is never granted (wasmtime-py 50's C API leaves TCP sockets denied even after
`wasi_config_inherit_network`), so the guest's sockets are always refused. A stdin that can
block (a FIFO, a pipe, a terminal) comes through the engine's relay (stdin.py), which a stop
closes.
"""

from __future__ import annotations

import os
from pathlib import Path

import wasmtime

from wasm_oci.engine import ffi, stdin
from wasm_oci.engine.spec import INHERIT, Inherit, RunSpec
from wasm_oci.errors import NotFound


def wasi_config(spec: RunSpec) -> tuple[wasmtime.WasiConfig, stdin.Stream | None]:
    """A config that already holds the stdio files it opened, and the run's stdin relay
    (None: no stdin that can block): both closed here if a later step fails, so a failed
    setup leaves no descriptor behind for the garbage collector."""
    config = wasmtime.WasiConfig()
    relay = None
    try:
        ffi.set_argv_env(config, spec.args, spec.env)
        relay = _stdin(config, spec.stdin)
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
        if relay is not None:
            relay.close()
        raise
    return config, relay


def _stdin(config: wasmtime.WasiConfig, value: Path | bytes | Inherit | None) -> stdin.Stream | None:
    if value is None or isinstance(value, bytes):
        _stream(config, "stdin", value)
        return None
    try:
        relay = stdin.relayed(value)
    except OSError:
        raise NotFound(f"stdin {value}: cannot open") from None
    if relay is None:
        _stream(config, "stdin", value)
        return None
    stream, guest_end = relay
    try:
        config.stdin_file = f"/proc/self/fd/{guest_end}"  # a pipe with a writer: the open does not wait
    except BaseException:
        stream.close()
        raise
    finally:
        os.close(guest_end)
    return stream


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
