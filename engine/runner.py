"""The engine: one shared wasmtime.Engine, programs loaded once, a fresh Store per run.

A run is an Execution: `run()` blocks the calling thread (Wasm releases the GIL, so runs in
other threads proceed in parallel), `kill()` from any thread stops it at its next epoch check
(loop back-edges and calls), well under a millisecond after the call. The epoch only moves
when some guest must stop; each store's deadline callback then asks its own Execution
whether it is the one (see ffi.py), so no ticker thread runs while guests do.

A guest blocked in a host call sees no epoch check until the call returns, so a stop also
ends the calls it can: a read of a stdin that can block (its relay closes, stdin.py), a
preview 1 module's clock wait (clocks.py) and a component's wasi:io/poll wait (polls.py). A
stop requested before the run ended decides its result, whatever the guest did after it (an
end-of-file it was handed, an EINTR).
"""

from __future__ import annotations

import hashlib
import json
import signal as signals
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import wasmtime

from wasm_oci.engine import clocks, detach, ffi, memory, stdin
from wasm_oci.engine.cache import CompileCache
from wasm_oci.engine.deadlines import Deadline, Deadlines
from wasm_oci.engine.program import Loader, Program, unsatisfied_import
from wasm_oci.engine.result import RunResult, Stop, trapped
from wasm_oci.engine.spec import RunSpec
from wasm_oci.engine.wasi import wasi_config

SETTINGS = {"epoch_interruption": True, "memory_init_cow": False}
"""Every Config setting the engine changes (memory_init_cow must be off for memory.py's
creator); part of the precompile cache key."""


class Engine:
    def __init__(self, cache_dir: Path | None = None, programs_in_memory: int = 32) -> None:
        config = wasmtime.Config()
        for setting, value in SETTINGS.items():
            setattr(config, setting, value)
        memory.install(config)
        self.wasmtime = wasmtime.Engine(config)
        self.loader = Loader(self.wasmtime, json.dumps(SETTINGS, sort_keys=True), CompileCache(cache_dir))
        self.deadlines = Deadlines()
        self._programs: OrderedDict[str, Program] = OrderedDict()
        self._capacity = programs_in_memory
        self._lock = threading.Lock()

    def load(self, wasm: bytes, digest: str | None = None, name: str = "app.wasm") -> Program:
        """Compile (or fetch from the memory or disk cache) a component or preview 1 module.

        `digest` is the sha256 of `wasm` the caller already verified; computed when None.
        """
        started = time.perf_counter()
        digest = digest or "sha256:" + hashlib.sha256(wasm).hexdigest()
        with self._lock:
            known = self._programs.get(digest)
            if known is not None:
                self._programs.move_to_end(digest)
                return Program(name, digest, known.kind, "memory", time.perf_counter() - started, known.entry)
        program = self.loader.load(wasm, digest, name)
        with self._lock:
            self._programs[digest] = program
            while len(self._programs) > self._capacity:
                self._programs.popitem(last=False)
        return program

    def execution(self, program: Program, spec: RunSpec) -> Execution:
        return Execution(self, program, spec)

    def run(self, program: Program, spec: RunSpec) -> RunResult:
        return Execution(self, program, spec).run()


class Execution:
    """One run of a program; `kill()` and `wait()` may be called from any thread.

    Setup (WASI, limits, instantiation) happens in the thread that calls `prepare()`, or
    `start()`/`run()` when nothing prepared it, so a missing file or import raises there. A
    prepared run only has to enter the guest: the shim prepares at Create so that Start is a
    thread's wake-up away from the guest's first instruction.
    """

    def __init__(self, engine: Engine, program: Program, spec: RunSpec) -> None:
        self.engine, self.program, self.spec = engine, program, spec
        self.result: RunResult | None = None
        self.entered = 0.0
        """`time.perf_counter()` just before the guest's entry was called (0.0 until then)."""
        self._stop: Stop | None = None
        self.memory = memory.Account(spec.memory_limit, self._out_of_memory)
        """What the run's linear memories hold, against its memory limit (all memories together)."""
        self._waits = clocks.Waits(self.memory)
        self._stdin: stdin.Stream | None = None
        self._store: wasmtime.Store | None = None
        """Owns everything the guest holds (its memory, its WASI context's open files): closed
        the moment the run ends, never left to the garbage collector (a trap's traceback
        keeps the store reachable, and with it the stdio FIFOs a client waits to see closed)."""
        self._step: Callable[[], int] | wasmtime.WasmtimeError | wasmtime.Trap | None = None
        self._prepared = False
        self._token = 0
        self._deadline: Deadline | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Set up and instantiate in this thread; a trap while instantiating (a start
        function, the memory limit) is kept and ends the run when it is entered."""
        with self._lock:
            if self._prepared:
                raise RuntimeError("an Execution runs once")
            self._prepared = True
        self._step = self._instantiate()

    def start(self) -> None:
        """Prepare (unless done already) in this thread, then run the guest on a new one; `wait()` for the result."""
        if not self._prepared:
            self.prepare()
        threading.Thread(target=self.run, name=f"wasm-oci {self.program.name}", daemon=True).start()

    def run(self) -> RunResult:
        """Prepare (unless done already) and run the guest in this thread; returns when it ends or is stopped."""
        if not self._prepared:
            self.prepare()
        return self._enter()

    def discard(self) -> None:
        """Let go of a prepared run that will not be entered (its store, its open files)."""
        with self._lock:
            if self.entered or self._done.is_set():
                return
            self._step = None
        self._close(None)

    def wait(self, timeout: float | None = None) -> RunResult | None:
        self._done.wait(timeout)
        return self.result

    def release_stdio(self) -> int:
        """For a guest the host gives up waiting for (blocked after a kill in a host call a
        stop cannot end, such as a write to a FIFO nobody reads): point its output FIFOs at
        /dev/null now (see detach.py); how many descriptors moved. Its stdin went with the
        stop; everything else it holds goes when its call returns and the run closes its store."""
        with self._lock:  # `_close` closes the store under this lock: the fds stay put meanwhile
            if self._store is None:
                return 0
            return detach.point_fifos_at_null([s for s in (self.spec.stdout, self.spec.stderr) if isinstance(s, Path)])

    def kill(self, signal: int = signals.SIGKILL) -> None:
        """Stop the guest (status 128 + signal); a no-op once it has ended."""
        self._request_stop(Stop("killed", signal))

    def _request_stop(self, stop: Stop) -> None:
        with self._lock:
            if self._stop is not None or self._done.is_set():
                return
            self._stop = stop
        self.engine.wasmtime.increment_epoch()
        self._waits.stopped.set()
        if self._stdin is not None:
            self._stdin.close()

    def _out_of_memory(self) -> None:
        """A growth past the memory limit (on the guest's thread): stopped as the OOM killer would."""
        self._request_stop(Stop("oom", limit=self.spec.memory_limit))

    def _should_stop(self) -> bool:
        return self._stop is not None

    def _instantiate(self) -> Callable[[], int] | wasmtime.WasmtimeError | wasmtime.Trap:
        """The guest's entry, or the trap that ended it while instantiating."""
        try:
            store = self._store = wasmtime.Store(self.engine.wasmtime)
            config, self._stdin = wasi_config(self.spec)
            store.set_wasi(config)
            memory.limit_store(store, self.spec.memory_limit)
            self._token = ffi.watch_epochs(store, self._should_stop)
            clocks.running(self._waits)  # a start function's sleep
            with memory.charging(self.memory):
                return self.program.entry.instantiate(store)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            missing = unsatisfied_import(exc, self.program.name)
            if missing is None:
                return self._past_limits(exc)
            self._close(None)
            raise missing from None
        except BaseException:
            self._close(None)
            raise
        finally:
            clocks.running(None)

    def _past_limits(self, error: wasmtime.WasmtimeError | wasmtime.Trap) -> wasmtime.WasmtimeError | wasmtime.Trap:
        """Wasmtime's refusal of a table or count past the store limits, naming the limits."""
        text = str(error)
        if "exceeds table limits" not in text and "resource limit exceeded" not in text:
            return error
        cause = [line.strip() for line in text.splitlines() if line.strip()][-1].removeprefix("resource limit exceeded: ")
        return wasmtime.WasmtimeError(f"resource limit exceeded: {cause} ({memory.limits_text(self.spec.memory_limit)})")

    def _enter(self) -> RunResult:
        with self._lock:
            step, self._step = self._step, None
            if step is None:
                raise RuntimeError("an Execution runs once")
            self.entered = time.perf_counter()
        began = time.monotonic()
        if self.spec.timeout is not None:
            self._deadline = self.engine.deadlines.at(began + self.spec.timeout, lambda: self._request_stop(Stop("timeout")))
        result = None
        if self._stdin is not None:
            self._stdin.watch()
        clocks.running(self._waits)
        try:
            if isinstance(step, Exception):
                raise step
            result = RunResult(step(), "exit", None, time.monotonic() - began)
        except wasmtime.ExitTrap as exc:
            result = RunResult(exc.code, "exit", None, time.monotonic() - began)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            elapsed = time.monotonic() - began
            result = trapped(exc, elapsed) if self._stop is None else self._stop.result(elapsed)
        finally:
            clocks.running(None)
            if self._stop is not None and result is not None and result.reason != self._stop.reason:
                result = self._stop.result(result.elapsed)  # ended by itself after the stop (an EOF, a refused growth)
            self._close(result)
        assert result is not None  # each path above set it, or raised
        return result

    def _close(self, result: RunResult | None) -> None:
        ffi.unwatch(self._token)
        if self._deadline is not None:
            self._deadline.cancel()
        with self._lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()
        if self._stdin is not None:
            self._stdin.close()
        self.result = result
        self._done.set()
