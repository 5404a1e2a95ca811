"""The engine's start-up costs, in-process: what the shim pays between Start and guest entry.

- load: compiling hello.wasm (empty cache) vs deserializing it from the precompile cache
  (a fresh Engine on a warm cache, as a new process sees it) vs this Engine's memory;
- instantiate + run hello.wasm on a cache hit (stdout discarded), against spawning
  /bin/true: the least a runtime that starts a native process per task pays;
- `Execution.start()`, what the shim's Start calls: setup and instantiate, then a thread;
- kill latency: `Execution.kill()` to `run()` returning, for a guest spinning in a loop;
- parallel runs: hello runs/s from 1 thread and from one thread per CPU (Wasm drops the GIL).

    .venv/bin/python bench/engine_run.py [--runs 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, Comparison, alternate

from wasm_oci.engine import Engine, RunSpec

HELLO = (REPO / "examples" / "hello" / "hello.wasm").read_bytes()
SPIN = (REPO / "examples" / "spin" / "spin.wasm").read_bytes()


def timed(action: object) -> float:
    began = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - began


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
        lambda i: timed(lambda: engine.run(program, spec)),
        lambda i: timed(lambda: subprocess.run(["/bin/true"], check=True)),
    )
    return Comparison("instantiate + run hello.wasm (cache hit)", ours, spawn, "spawn /bin/true")


def shim_starts(runs: int, engine: Engine) -> list[float]:
    """`Execution.start()` as the shim's Start calls it: WASI setup, instantiate, hand off to a thread."""
    program = engine.load(HELLO)
    samples = []
    for _ in range(runs):
        execution = engine.execution(program, RunSpec(args=["hello.wasm"]))
        samples.append(timed(execution.start))
        execution.wait()
    return samples


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


def throughput(engine: Engine, threads: int, seconds: float = 2.0) -> float:
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


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        load, memory = loads(min(args.runs, 50), Path(tmp))
        engine = Engine(cache_dir=Path(tmp) / "warm")
        start = starts(args.runs, engine)
        shim = shim_starts(args.runs, engine)
        kill = kills(min(args.runs, 100), engine)
        cpus = os.cpu_count() or 1
        serial, parallel = throughput(engine, 1), throughput(engine, cpus)
    print("| measurement | wasm-oci median | baseline | baseline median | ratio | runs |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in (load, start):
        print(f"| {row.name} | {us(row.ours_median)} | {row.baseline_name} | {us(row.baseline_median)} | {row.ratio:.3f} | {len(row.ours)} |")
    print()
    print(f"- load from this Engine's memory: median {us(statistics.median(memory))}")
    print(f"- instantiate + run hello.wasm: p90 {us(pct(start.ours, 90))}, p99 {us(pct(start.ours, 99))}")
    print(f"- Execution.start() (setup, instantiate, thread hand-off): median {us(statistics.median(shim))}, p99 {us(pct(shim, 99))}")
    print(f"- kill latency: median {us(statistics.median(kill))}, p99 {us(pct(kill, 99))}, max {us(max(kill))} ({len(kill)} kills)")
    print(f"- hello runs/s: 1 thread {serial:.0f}, {cpus} threads {parallel:.0f} ({parallel / serial:.2f}x)")


if __name__ == "__main__":
    main()
