"""The two Wasmtime C API calls wasmtime-py 50 does not wrap, and why the engine needs them.

- A per-store epoch deadline callback: with one shared Engine, incrementing the epoch reaches
  every running store, so each store asks its own Execution whether it is the one to stop.
  Without it, stopping one guest would stop them all.
- stdin from bytes: `serve` hands each request body over without a file; a file opened by
  Wasmtime's async reader costs more than the whole rest of a request (measured ~130 us).

Only this module and memory.py (the host memory creator) touch `wasmtime._bindings`; the pin
`wasmtime>=50,<51` covers them.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings as capi

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(capi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(capi.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE

_stoppers: dict[int, Callable[[], bool]] = {}
_tokens = itertools.count(1)


def _on_deadline(_context: object, token: int | None, delta: Any, kind: Any) -> int:
    """Runs on the guest's thread at each epoch tick: trap if asked to stop, else wait for the next tick."""
    should_stop = _stoppers.get(token or 0)
    if should_stop is not None and should_stop():
        error = wasmtime.WasmtimeError("guest stopped by the host")
        return ctypes.cast(error._consume(), ctypes.c_void_p).value or 0  # ownership passes to wasmtime
    delta[0] = 1
    kind[0] = _CONTINUE
    return 0


_ON_DEADLINE = _CALLBACK(_on_deadline)


def watch_epochs(store: wasmtime.Store, should_stop: Callable[[], bool]) -> int:
    """Trap the store's guest at the next epoch tick where `should_stop()`; returns a token for `unwatch`."""
    token = next(_tokens)
    _stoppers[token] = should_stop
    capi.wasmtime_store_epoch_deadline_callback(store.ptr(), _ON_DEADLINE, token, _NO_FINALIZER)
    # Due at once: the first epoch check asks should_stop(), which catches a stop requested
    # before this store existed (its epoch increment is already spent); then every tick.
    store.set_epoch_deadline(0)
    return token


def unwatch(token: int) -> None:
    _stoppers.pop(token, None)


def set_stdin_bytes(config: wasmtime.WasiConfig, data: bytes) -> None:
    vec = capi.wasm_byte_vec_t()
    capi.wasm_byte_vec_new(ctypes.byref(vec), len(data), (ctypes.c_uint8 * len(data)).from_buffer_copy(data))
    capi.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))  # takes the bytes; vec is left empty
