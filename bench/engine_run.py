"""The engine's start-up costs, in-process: what the shim pays between Start and guest entry.

- load: compiling hello.wasm (empty cache) vs deserializing it from the precompile cache
  (a fresh Engine on a warm cache, as a new process sees it) vs this Engine's memory;
- instantiate + run hello.wasm on a cache hit (stdout discarded), against spawning
  /bin/true: the least a runtime that starts a native process per task pays;
- `Execution.prepare()`, what the shim's Create calls (setup, instantiate), and waking a
  parked thread that enters the prepared guest, what its Start does;
- kill latency: `Execution.kill()` to `run()` returning, for a guest spinning in a loop;
- parallel runs: hello runs/s from 1 thread and from one thread per CPU.

    .venv/bin/python bench/engine_run.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, Comparison, Section, alternate, comparisons, duration, main, median, percentile, stopwatch

from wasm_oci.engine import Engine, RunSpec

HELLO = (REPO / "examples" / "hello" / "hello.wasm").read_bytes()
SPIN = (REPO / "examples" / "spin" / "spin.wasm").read_bytes()
RUNS, QUICK_RUNS = 500, 20
PARALLEL_NOTE = """Wasm execution itself runs without the GIL, but a short run is mostly wasmtime C calls
made through ctypes (Store, WASI context, instantiation, the call, the clean-up), and each of
them releases and retakes the GIL; with two threads those hand-offs turn into context switches,
so one process runs short guests faster from one thread than from several. When profiled, two
processes of one thread each did ~25,000 hello runs/s together where one process with two
threads did ~5,500 (`sys.setswitchinterval` and smaller memory reservations barely moved it).
The shim's and `serve`'s throughput on short tasks inherit this; long-running guests do run in
parallel."""


def loads(runs: int, work: Path) -> tuple[Comparison, list[float]]:
    warm = work / "warm"
    Engine(cache_dir=warm).load(HELLO)
    hits, compiles = alternate(
        runs,
        lambda i: Engine(cache_dir=warm).load(HELLO).load_seconds,
        lambda i: Engine(cache_dir=work / f"cold{i}").load(HELLO).load_seconds,
    )
    engine = Engine(cache_dir=warm)
    engine.load(HELLO)
    memory = [engine.load(HELLO).load_seconds for _ in range(runs)]
    return Comparison("load hello.wasm: disk cache hit", hits, compiles, "compile (no cache)"), memory


def starts(runs: int, engine: Engine) -> Comparison:
    program = engine.load(HELLO)
    spec = RunSpec(args=["hello.wasm"])
    ours, spawn = alternate(
        runs,
        lambda i: stopwatch(lambda: engine.run(program, spec)),
        lambda i: stopwatch(lambda: subprocess.run(["/bin/true"], check=True)),
    )
    return Comparison("instantiate + run hello.wasm (cache hit)", ours, spawn, "spawn /bin/true")


def shim_starts(runs: int, engine: Engine) -> tuple[list[float], list[float]]:
    """The shim's split: `Execution.prepare()` at Create (WASI setup, instantiate), then at
    Start a parked thread woken to call `run()`, timed until it enters the guest."""
    program = engine.load(HELLO)
    prepares, wakes = [], []
    for _ in range(runs):
        execution = engine.execution(program, RunSpec(args=["hello.wasm"]))
        prepares.append(stopwatch(execution.prepare))
        woken = threading.Event()
        parked = threading.Thread(target=lambda woken=woken, execution=execution: (woken.wait(), execution.run()))
        parked.start()
        began = time.perf_counter()
        woken.set()
        parked.join()
        wakes.append(execution.entered - began)
    return prepares, wakes


def kills(runs: int, engine: Engine) -> list[float]:
    program = engine.load(SPIN)
    latencies = []
    for _ in range(runs):
        execution = engine.execution(program, RunSpec())
        execution.start()
        time.sleep(0.005)
        began = time.perf_counter()
        execution.kill()
        execution.wait()
        latencies.append(time.perf_counter() - began)
    return latencies


def throughput(engine: Engine, threads: int, seconds: float) -> float:
    program = engine.load(HELLO)
    spec = RunSpec(args=["hello.wasm"])
    counts = [0] * threads
    until = time.perf_counter() + seconds

    def worker(n: int) -> None:
        while time.perf_counter() < until:
            engine.run(program, spec)
            counts[n] += 1

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / seconds


def run(quick: bool) -> Section:
    runs, seconds = (QUICK_RUNS, 0.5) if quick else (RUNS, 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        load, memory = loads(min(runs, 50), Path(tmp))
        engine = Engine(cache_dir=Path(tmp) / "warm")
        start = starts(runs, engine)
        prepares, wakes = shim_starts(runs, engine)
        kill = kills(min(runs, 100), engine)
        cpus = os.cpu_count() or 1
        serial, parallel = throughput(engine, 1, seconds), throughput(engine, cpus, seconds)
    return Section(
        "The engine in-process: what a start costs once the process is up",
        f"""The engine's start-up costs measured inside one Python process (no CLI, no containerd):
what the shim pays between a Start request and guest entry, and `wasm-oci run` after its imports.
Loading examples/hello/hello.wasm from the precompile cache (a fresh Engine on a warm cache, as a
new process sees it) vs compiling it; instantiating and running it on a cache hit (stdout
discarded) vs spawning /bin/true, the least a runtime that starts a native process per task
pays. {runs} runs each (loads: {min(runs, 50)}).""",
        comparisons([load, start]),
        "\n".join(
            [
                f"- load from this Engine's memory: median {duration(median(memory))}",
                f"- instantiate + run hello.wasm: p90 {duration(percentile(start.ours or [], 90))}, p99 {duration(percentile(start.ours or [], 99))}",
                f"- `Execution.prepare()` (what the shim's Create calls: WASI setup, instantiate): median {duration(median(prepares))}, p99 {duration(percentile(prepares, 99))}",
                f"- waking a parked thread that enters the prepared guest (what the shim's Start does): median {duration(median(wakes))}, p99 {duration(percentile(wakes, 99))}",
                f"- kill latency (`Execution.kill()` of a guest spinning in a loop, until `run()` returns): median {duration(median(kill))}, p99 {duration(percentile(kill, 99))}, max {duration(max(kill))} ({len(kill)} kills)",
                f"- hello runs/s in one process: 1 thread {serial:.0f}, {cpus} threads {parallel:.0f} ({parallel / serial:.2f}x)",
                "",
                PARALLEL_NOTE,
            ]
        ),
        (load.summary(), start.summary()),
    )


if __name__ == "__main__":
    main(run)
