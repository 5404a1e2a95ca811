"""Clock waits a stop can cut short, for WASI preview 1 modules.

Wasmtime's poll_oneoff sleeps in the host: a module in `sleep(30)` could be neither killed
nor timed out for 30 s, and its thread (in the shim, its memory too) stayed that long. So the
module linker's poll_oneoff is this one. A poll of clocks only (what sleep and nanosleep make)
waits on its run's `Waits.stopped`, which the run's stop sets: the poll returns EINTR at once
and the guest is trapped at its next epoch check. The events follow the preview 1 ABI
(subscription 48 bytes, event 32; relative and absolute (flag 1) timeouts on the realtime and
monotonic clocks). Any other poll (an fd, another clock) is Wasmtime's own, through a helper
instance per run: a host function cannot call a WASI function directly, as WASI finds memory
through its caller's `memory` export. Of those, a read of stdin is woken by the stdin relay's
close (stdin.py).

A component's waits (wasi:io/poll, whose pollables its clocks and streams make) are cut
short another way, in Wasm: see polls.py.
"""

from __future__ import annotations

import struct
import threading
import time

import wasmtime

from wasm_oci.engine import memory

_SUBSCRIPTION = struct.Struct("<QB7xI4xQ8xH6x")
"""userdata, tag (0: clock), clock id, timeout (ns), flags: 48 bytes."""
_EVENT = struct.Struct("<QHB21x")
"""userdata, errno, type (0: clock): 32 bytes, the fd fields left zero."""
_U64, _U32 = struct.Struct("<Q"), struct.Struct("<I")
_CLOCK, _REALTIME, _MONOTONIC, _ABSOLUTE = 0, 0, 1, 1
_EFAULT, _EINTR, _EINVAL, _ENOMEM = 21, 27, 28, 48
_LONGEST_WAIT = 3600.0
"""Event.wait refuses timeouts past a C long of microseconds: a longer wait is taken in parts."""
_PAGE = 1 << 16
_HELPER_WAT = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "poll") (param i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "now") (result i32) (call $now (i32.const 1) (i64.const 1) (i32.const 0))))"""
"""Wasmtime's poll_oneoff and monotonic clock, called from an instance whose memory is this one's."""


class Waits:
    """One run's clock waits: `stopped` ends the current one and every later one at once."""

    def __init__(self, account: memory.Account) -> None:
        self.stopped = threading.Event()
        self.account = account
        """Charged for the helper instance's memory, which holds copies of the guest's polls."""
        self.helper: tuple[wasmtime.Memory, wasmtime.Func, wasmtime.Func] | None = None


_running = threading.local()


def running(waits: Waits | None) -> None:
    """`waits` belongs to the guest this thread runs from now (None: none)."""
    _running.waits = waits


class PollOneoff:
    """The shadowing poll_oneoff, defined on a module linker that already has WASI."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self.engine = engine
        self._wasi = wasmtime.Linker(engine)
        self._wasi.define_wasi()
        self._helper_module: wasmtime.Module | None = None

    def install(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        linker.allow_shadowing = True
        linker.define_func("wasi_snapshot_preview1", "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]), self._poll, access_caller=True)
        linker.allow_shadowing = False

    def _poll(self, caller: wasmtime.Caller, subscriptions: int, events: int, count: int, written: int) -> int:
        subscriptions, events, count, written = (value & 0xFFFFFFFF for value in (subscriptions, events, count, written))
        waits = getattr(_running, "waits", None) or Waits(memory.Account(None))
        guest = caller.get("memory")
        if not isinstance(guest, wasmtime.Memory):
            return _EFAULT
        size = guest.data_len(caller)
        if count == 0:
            return _EINVAL
        if subscriptions + count * _SUBSCRIPTION.size > size or events + count * _EVENT.size > size or written + 4 > size:
            return _EFAULT
        raw = guest.read(caller, subscriptions, subscriptions + count * _SUBSCRIPTION.size)
        clocks = [_SUBSCRIPTION.unpack_from(raw, i * _SUBSCRIPTION.size) for i in range(count)]
        if any(tag != _CLOCK or clock not in (_REALTIME, _MONOTONIC) for _, tag, clock, _, _ in clocks):
            return self._delegate(caller, waits, guest, raw, events, count, written)
        guest_now = 0
        if any(flags & _ABSOLUTE and clock == _MONOTONIC for _, _, clock, _, flags in clocks):
            if (read := self._guest_monotonic(caller, waits)) is None:
                return _EINTR
            guest_now = read
        now, wall = time.monotonic(), time.time_ns()
        deadlines = []
        for userdata, _, clock, timeout, flags in clocks:
            origin = 0 if not flags & _ABSOLUTE else wall if clock == _REALTIME else guest_now
            deadlines.append((now + (timeout - origin) / 1e9, userdata))
        first = min(deadline for deadline, _ in deadlines)
        while (left := first - time.monotonic()) > 0:
            if waits.stopped.wait(min(left, _LONGEST_WAIT)):
                return _EINTR
        due = time.monotonic()
        fired = b"".join(_EVENT.pack(userdata, 0, _CLOCK) for deadline, userdata in deadlines if deadline <= due)
        guest.write(caller, fired, events)
        guest.write(caller, _U32.pack(len(fired) // _EVENT.size), written)
        return 0

    def _helper(self, caller: wasmtime.Caller, waits: Waits) -> tuple[wasmtime.Memory, wasmtime.Func, wasmtime.Func]:
        if waits.helper is None:
            if self._helper_module is None:
                self._helper_module = wasmtime.Module(self.engine, bytes(wasmtime.wat2wasm(_HELPER_WAT)))
            with memory.charging(waits.account):
                exports = self._wasi.instantiate(caller, self._helper_module).exports(caller)
            scratch, poll, now = exports["memory"], exports["poll"], exports["now"]
            assert isinstance(scratch, wasmtime.Memory) and isinstance(poll, wasmtime.Func) and isinstance(now, wasmtime.Func)
            waits.helper = scratch, poll, now
        return waits.helper

    def _guest_monotonic(self, caller: wasmtime.Caller, waits: Waits) -> int | None:
        """The guest's monotonic clock now (Wasmtime's, whose origin is its own); None when stopped meanwhile."""
        try:
            scratch, _, now = self._helper(caller, waits)
            now(caller)
        except (wasmtime.WasmtimeError, wasmtime.Trap):  # an epoch check in the helper: the run is stopping
            return None
        return int(_U64.unpack(scratch.read(caller, 0, 8))[0])

    def _delegate(
        self, caller: wasmtime.Caller, waits: Waits, guest: wasmtime.Memory, raw: bytearray, events: int, count: int, written: int
    ) -> int:
        """Wasmtime's poll_oneoff on a copy of the subscriptions in the helper's memory."""
        at_events = 8 + len(raw)
        at_written = at_events + count * _EVENT.size
        try:
            scratch, poll, _ = self._helper(caller, waits)
            missing = -(-(at_written + 4) // _PAGE) - scratch.size(caller)
            if missing > 0:
                scratch.grow(caller, missing)
        except (wasmtime.WasmtimeError, wasmtime.Trap):  # past the memory limit, or stopping
            return _EINTR if waits.stopped.is_set() else _ENOMEM
        scratch.write(caller, raw, 8)
        try:
            errno = poll(caller, 8, at_events, count, at_written)
        except (wasmtime.WasmtimeError, wasmtime.Trap):
            return _EINTR
        assert isinstance(errno, int)
        fired = _U32.unpack(scratch.read(caller, at_written, at_written + 4))[0]
        guest.write(caller, scratch.read(caller, at_events, at_events + fired * _EVENT.size), events)
        guest.write(caller, _U32.pack(fired), written)
        return errno
