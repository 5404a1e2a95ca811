"""Linear memories the engine allocates itself (Wasmtime's host memory creator), so every byte
a run's memories hold is charged to that run.

Why not Wasmtime's store limits: they cap each memory on its own, refuse a growth silently
(`memory.grow` returns -1, the guest decides what happens) and report no usage. Here:
- a run's memory limit covers all its memories together;
- a growth past it is refused *and* seen: the account calls its `on_exhausted`, which the
  runner turns into an out-of-memory stop (status 137, as the kernel's OOM killer gives);
- what a run holds is known from any thread at any time (`Account.used`, `peak`, and
  `resident()`, the pages it touched): the shim reports them as the container's memory usage.

Each memory is one anonymous mapping of Wasmtime's reservation plus its guard region, all
inaccessible but the committed bytes; growth makes more of it accessible in place (memories
never move), and the finalizer unmaps it. Copy-on-write initialisation from the module's data
image needs Wasmtime's own mappings, so it is switched off: data segments are copied at
instantiation, which costs little for the small data of typical components.

Runs charge the memories they create through `charging(account)` around instantiation; a
memory keeps its account for life, so growth is charged whichever thread runs the guest.

Tables, which Wasmtime allocates itself, and the counts of instances, tables and memories are
bounded with Wasmtime's store limits instead (`limit_store`): a guest could otherwise ask for
a table of 2**32 elements (32 GiB of host memory) in one instruction. Per run:
- TABLES tables, MEMORIES memories, INSTANCES core instances (components built with an adapter
  have 3 or 4 instances and about as many tables; composed ones a few times that);
- each table at most `table_elements(memory_limit)` elements: memory_limit / (8 * TABLES), so
  that all tables together (8 bytes an element) hold at most as much as the memory limit and a
  run's total stays under twice it: 2,048 elements at 1 MiB, 131,072 at 64 MiB, 262,144 at
  serve's 128 MiB; without a memory limit TABLE_ELEMENTS (1,048,576: 8 MiB a table).
A table or count past its limit at instantiation fails the run (status 134, a message naming
the limits); a `table.grow` past it returns -1 to the guest, as a refused `memory.grow` would
without a memory limit.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import wasmtime
from wasmtime import _bindings as capi

_PROT_NONE, _PROT_READ_WRITE = 0, 3
_MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x02, 0x20, 0x4000
_MAP_FAILED = ctypes.c_void_p(-1).value
_DYNAMIC_CAPACITY = 1 << 32
"""What a memory Wasmtime lets move (64-bit memories) may grow to in place here."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class Account:
    """What one run's memories hold, against its limit (None: unlimited)."""

    def __init__(self, limit: int | None, on_exhausted: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._on_exhausted = on_exhausted

    def _charge(self, delta: int) -> bool:
        """Take `delta` more bytes if the limit allows (under the module lock)."""
        if self.limit is not None and self.used + delta > self.limit:
            return False
        self.used += delta
        self.peak = max(self.peak, self.used)
        return True


@dataclass
class _Memory:
    base: int
    size: int
    capacity: int
    mapped: int
    account: Account | None


_memories: dict[int, _Memory] = {}
_ids = itertools.count(1)
_lock = threading.Lock()
_current = threading.local()


@contextmanager
def charging(account: Account | None) -> Iterator[None]:
    """Memories created in this thread meanwhile are charged to `account`."""
    previous = getattr(_current, "account", None)
    _current.account = account
    try:
        yield
    finally:
        _current.account = previous


def _error(message: str) -> int:
    """A wasmtime_error_t* whose ownership passes to Wasmtime."""
    return ctypes.cast(wasmtime.WasmtimeError(message)._consume(), ctypes.c_void_p).value or 0


def _refused(account: Account, wanted: int) -> int:
    account._on_exhausted()
    return _error(f"out of memory: {wanted} more bytes would pass the limit of {account.limit} bytes")


def _get_memory(env: int, size: ctypes._Pointer[ctypes.c_size_t], capacity: ctypes._Pointer[ctypes.c_size_t]) -> int:
    memory = _memories[env]
    size[0], capacity[0] = memory.size, memory.capacity
    return memory.base


def _grow_memory(env: int, new_size: int) -> int:
    memory = _memories[env]
    delta = new_size - memory.size
    if new_size > memory.capacity:
        return _error(f"a memory cannot grow past {memory.capacity} bytes")
    if delta <= 0:
        return 0
    with _lock:
        allowed = memory.account is None or memory.account._charge(delta)
    if not allowed:
        assert memory.account is not None
        return _refused(memory.account, delta)
    if _libc.mprotect(memory.base + memory.size, delta, _PROT_READ_WRITE) != 0:
        with _lock:
            if memory.account is not None:
                memory.account.used -= delta
        return _error(f"cannot commit {delta} bytes of linear memory (errno {ctypes.get_errno()})")
    memory.size = new_size
    return 0


def _finalize(env: int) -> None:
    with _lock:
        memory = _memories.pop(env)
        if memory.account is not None:
            memory.account.used -= memory.size
    _libc.munmap(memory.base, memory.mapped)


_GET = capi.wasmtime_memory_get_callback_t(_get_memory)
_GROW = capi.wasmtime_memory_grow_callback_t(_grow_memory)
_FINALIZE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize)


def _new_memory(
    _env: object, _type: object, minimum: int, maximum: int, reserved: int, guard: int, out: ctypes._Pointer[capi.wasmtime_linear_memory_t]
) -> int:
    account: Account | None = getattr(_current, "account", None)
    capacity = reserved or max(minimum, min(maximum, _DYNAMIC_CAPACITY))
    if minimum > capacity:
        return _error(f"a memory of {minimum} bytes does not fit its reservation of {capacity} bytes")
    if account is not None:
        with _lock:
            allowed = account._charge(minimum)
        if not allowed:
            return _refused(account, minimum)
    mapped = capacity + guard
    base = _libc.mmap(None, mapped, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
    if base in (None, _MAP_FAILED) or (minimum and _libc.mprotect(base, minimum, _PROT_READ_WRITE) != 0):
        if base not in (None, _MAP_FAILED):
            _libc.munmap(base, mapped)
        with _lock:
            if account is not None:
                account.used -= minimum
        return _error(f"cannot map {mapped} bytes for a linear memory (errno {ctypes.get_errno()})")
    key = next(_ids)
    with _lock:
        _memories[key] = _Memory(base, minimum, capacity, mapped, account)
    made = out[0]
    made.env, made.get_memory, made.grow_memory, made.finalizer = key, _GET, _GROW, _FINALIZE
    return 0


_NEW = capi.wasmtime_new_memory_callback_t(_new_memory)
_CREATOR = capi.wasmtime_memory_creator_t(None, _NEW, ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p)))


TABLES = 64
MEMORIES = 64
INSTANCES = 256
TABLE_ELEMENTS = 1 << 20
_TABLE_ELEMENT_BYTES = 8


def table_elements(memory_limit: int | None) -> int:
    """The elements one table of a run may hold (see the module docstring)."""
    if memory_limit is None:
        return TABLE_ELEMENTS
    return min(TABLE_ELEMENTS, memory_limit // (_TABLE_ELEMENT_BYTES * TABLES))


def limit_store(store: wasmtime.Store, memory_limit: int | None) -> None:
    store.set_limits(table_elements=table_elements(memory_limit), tables=TABLES, instances=INSTANCES, memories=MEMORIES)


def limits_text(memory_limit: int | None) -> str:
    """The store limits in words, for the message of a run that passed one."""
    return (
        f"a run may have {TABLES} tables of up to {table_elements(memory_limit)} elements each, "
        f"{MEMORIES} memories and {INSTANCES} instances"
    )


def install(config: wasmtime.Config) -> None:
    """Make every linear memory of engines built from `config` one of ours; `config` must have
    `memory_init_cow` off (runner.SETTINGS), or Wasmtime panics at the first instantiation."""
    capi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(_CREATOR))


_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_PAGE = 4096
_LOW_BIT = bytes(byte & 1 for byte in range(256))


def resident(account: Account) -> int:
    """Bytes of the account's memories that are in RAM now (mincore): what the guest has
    touched, the figure a kernel's working set counts; `used` is what it may touch."""
    with _lock:
        spans = [(m.base, m.size) for m in _memories.values() if m.account is account and m.size]
    total = 0
    for base, size in spans:
        pages = ctypes.create_string_buffer(size // _PAGE)
        if _libc.mincore(base, size, pages) == 0:
            total += pages.raw.translate(_LOW_BIT).count(1) * _PAGE
    return total


def live_memories() -> int:
    """How many memories are mapped now (for tests: none outlive their store)."""
    return len(_memories)
