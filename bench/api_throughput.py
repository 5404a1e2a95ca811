"""Throughput over containerd's API: N short tasks, M at a time, each run by direct gRPC calls
(bench/containerd_client.py, as runwasi's stress test does) instead of a `ctr` process per task;
wasm-oci shim vs runc through the same client. Defaults N = 1000 at M = 10 and at M = 50.

    .venv/bin/python bench/api_throughput.py [--quick]
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from cold_start import GREETING
from common import SHIM_MISSING, SUMMARY_HEADER, Section, main, median, ratio, table
from containerd_client import Client, Image
from guests import HELLO
from stack import Stack, Workload, stack

TASKS, LEVELS, ROUNDS = 1000, (10, 50), 5
QUICK_TASKS, QUICK_LEVELS, QUICK_ROUNDS = 20, (4, 8), 2


def batch(s: Stack, client: Client, workload: Workload, image: Image, tasks: int, concurrency: int) -> float:
    """Tasks per second of `tasks` tasks, `concurrency` at a time; each must exit 0."""

    def one(_: int) -> None:
        task_id = s.new_id("api")
        status = client.run(task_id, image, workload.runtime)
        if status != 0:
            raise SystemExit(f"{workload.label} task {task_id} exited {status}")

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(tasks)))
    return tasks / (time.perf_counter() - began)


def run(quick: bool) -> Section:
    tasks, levels, rounds = (QUICK_TASKS, QUICK_LEVELS, QUICK_ROUNDS) if quick else (TASKS, LEVELS, ROUNDS)
    rows = []
    with stack() as s:
        runc = s.busybox("echo", ["/bin/busybox", "echo", GREETING])
        wasm = s.component("hello", HELLO) if s.shim else None
        client = Client(s.containerd.address, s.containerd.namespace, json.loads(s.containerd.ctr("oci", "spec").stdout))
        try:
            images = {w.label: client.image(w.image) for w in filter(None, (runc, wasm))}
            for concurrency in levels:
                ours: list[float] = []
                baseline: list[float] = []
                for workload in filter(None, (runc, wasm)):  # warm-up: shim daemons, precompile cache, snapshot metadata
                    batch(s, client, workload, images[workload.label], concurrency, concurrency)
                for _ in range(rounds):  # alternate, so drift in machine load hits both alike
                    if wasm:
                        ours.append(batch(s, client, wasm, images[wasm.label], tasks // rounds, concurrency))
                    baseline.append(batch(s, client, runc, images[runc.label], tasks // rounds, concurrency))
                ours_rate = median(ours) if ours else None
                rows.append(
                    (
                        f"API throughput: {tasks} tasks over containerd's gRPC API, {concurrency} at a time",
                        f"{ours_rate:.1f} tasks/s" if ours_rate else SHIM_MISSING,
                        "runc + busybox echo",
                        f"{median(baseline):.1f} tasks/s",
                        ratio(ours_rate, median(baseline), lower_is_better=False),
                    )
                )
        finally:
            client.close()
    per_round = tasks // rounds
    return Section(
        "Throughput over containerd's API",
        f"""Tasks run by direct gRPC calls to one private containerd, no `ctr` process per task (what
runwasi's stress test does; bench/containerd_client.py on the protos in proto/): per task
Snapshots.Prepare on the image's layers (runc only: a Wasm image of ours has no filesystem
layers, and the shim needs no rootfs), Containers.Create, Tasks.Create, Start, Wait, Delete,
Containers.Delete, Snapshots.Remove; null stdio; every task must exit 0. Same images as the
cold-start benchmark; one client shared by a pool of M threads. At each M: a warm-up batch of M
tasks of each runtime, then {rounds} rounds of {per_round} tasks of each, wasm-oci and runc
alternating; tasks per second = tasks / wall time of a round, the figure is the median round
({tasks} tasks of each runtime in all).""",
        table(SUMMARY_HEADER, rows, text=(0, 2)),
        "",
        tuple(rows),
    )


if __name__ == "__main__":
    main(run)
