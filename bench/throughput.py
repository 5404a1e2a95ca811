"""Throughput through containerd: N short tasks in all, M running at once (`ctr run --rm` each),
tasks per second, wasm-oci shim vs runc. Defaults N = 1000, M = 10.

    .venv/bin/python bench/throughput.py [--quick]
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from cold_start import GREETING
from common import SHIM_MISSING, SUMMARY_HEADER, Section, main, ratio, table
from guests import HELLO
from stack import Outputs, Stack, Workload, stack

TASKS, CONCURRENCY = 1000, 10
QUICK_TASKS, QUICK_CONCURRENCY = 20, 4


def tasks_per_second(s: Stack, workload: Workload, tasks: int, concurrency: int, outputs: Outputs) -> float:
    """Run `tasks` tasks, `concurrency` at a time; each must exit 0, its output goes to `outputs`."""

    def one(_: int) -> None:
        outputs.check(workload, s.run(workload, s.new_id("tput"), timeout=120).stdout)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(tasks)))
    return tasks / (time.perf_counter() - began)


def run(quick: bool, tasks: int = TASKS, concurrency: int = CONCURRENCY) -> Section:
    if quick:
        tasks, concurrency = QUICK_TASKS, QUICK_CONCURRENCY
    outputs = Outputs(GREETING)
    with stack() as s:
        runc = s.busybox("echo", ["/bin/busybox", "echo", GREETING])
        wasm = s.component("hello", HELLO) if s.shim else None
        for workload in filter(None, (runc, wasm)):
            tasks_per_second(s, workload, concurrency, concurrency, outputs)  # warm-up: snapshot, precompile cache
        ours = tasks_per_second(s, wasm, tasks, concurrency, outputs) if wasm else None
        baseline = tasks_per_second(s, runc, tasks, concurrency, outputs)
    name = f"throughput: {tasks} x `ctr run --rm` hello, {concurrency} at a time"
    headline = (
        name,
        f"{ours:.1f} tasks/s" if ours else SHIM_MISSING,
        "runc + busybox echo",
        f"{baseline:.1f} tasks/s",
        ratio(ours, baseline, lower_is_better=False),
    )
    return Section(
        "Throughput through containerd",
        f"""{tasks} tasks in all, {concurrency} running at any moment (a pool of {concurrency} threads, each
running whole `ctr run --rm` commands back to back) against one private containerd, with the
images of the cold-start benchmark; every task must exit 0 and print the greeting. Tasks per second = {tasks} /
wall time of the batch. A warm-up batch of {concurrency} tasks of each goes first (snapshot
unpack, precompile cache); then the wasm-oci batch, then the runc batch.""",
        table(SUMMARY_HEADER, [headline], text=(0, 2)),
        outputs.note(),
        (headline,),
    )


if __name__ == "__main__":
    main(run)
