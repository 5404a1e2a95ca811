"""Wasmtime C API calls the engine makes itself, because wasmtime-py 50 does not wrap them or
wraps them too slowly for a run per HTTP request, and why.

- A per-store epoch deadline callback: with one shared Engine, incrementing the epoch reaches
  every running store, so each store asks its own Execution whether it is the one to stop.
  Without it, stopping one guest would stop them all.
- stdin from bytes: `serve` hands each request body over without a file; a file opened by
  Wasmtime's async reader costs more than the whole rest of a request (measured ~130 us).
- argv and environment from one ctypes array each: wasmtime-py builds them a string at a time
  (~60 us for a CGI request's twenty variables; ~10 us here).
- `wasi:cli/run` called with its result read in place: wasmtime-py reads the function's type
  and converts the result through its type objects at every call (~80 us over the bare call).

Only this module, memory.py (the host memory creator) and proxy/values.py touch wasmtime's C bindings; the pin
`wasmtime>=50,<51` covers them.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as capi

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


def _strings_setter(name: str, arrays: int) -> Any:
    """A fresh prototype of `name` taking `arrays` arrays of C strings (wasmtime-py's own
    function object keeps its argument types: `dll[name]` makes a new one)."""
    setter = capi.dll[name]
    setter.restype = ctypes.c_bool
    setter.argtypes = (ctypes.c_void_p, ctypes.c_size_t, *[ctypes.POINTER(ctypes.c_char_p)] * arrays)
    return setter


_SET_ARGV = _strings_setter("wasi_config_set_argv", 1)
_SET_ENV = _strings_setter("wasi_config_set_env", 2)


def _c_strings(strings: list[str]) -> ctypes.Array[ctypes.c_char_p]:
    array = (ctypes.c_char_p * len(strings))()
    array[:] = [string.encode() for string in strings]  # a slice converts faster than arguments
    return array


def set_argv_env(config: wasmtime.WasiConfig, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Give the guest exactly `argv` and `env` (Wasmtime copies the strings)."""
    if not _SET_ARGV(config.ptr(), len(argv), _c_strings(list(argv))):
        raise wasmtime.WasmtimeError("failed to configure argv")
    if not _SET_ENV(config.ptr(), len(env), _c_strings(list(env)), _c_strings(list(env.values()))):
        raise wasmtime.WasmtimeError("failed to configure the environment")


def call_run(run: wc.Func, store: wasmtime.Store) -> bool:
    """Call a `wasi:cli/run` export (no parameters, `result`): whether it returned ok. A trap or
    an exit raises as wasmtime-py's call would (WasmtimeError, ExitTrap)."""
    result = capi.wasmtime_component_val_t()
    error = capi.wasmtime_component_func_call(ctypes.byref(run._func), store._context(), None, 0, ctypes.byref(result), 1)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    try:
        if result.kind != capi.WASMTIME_COMPONENT_RESULT.value:
            raise wasmtime.WasmtimeError(f"wasi:cli/run returned a value of kind {result.kind}, not a result")
        return bool(result.of.result.is_ok)
    finally:
        capi.wasmtime_component_val_delete(ctypes.byref(result))
