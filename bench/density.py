"""Density: K long-running idle tasks at once through containerd, what they cost, how far K goes.

wasm-oci: bench/guests/idle.wat (blocks in a clock wait) on the wasm-oci shim; runc: the busybox
image running `busybox sleep 3600`. Tasks start with `ctr run -d --null-io`, several at a time,
in levels of K; at each level the shims (every process in containerd's mount namespace but
containerd) and all they spawned (runc's container processes) are summed from /proc (procfs.py),
with the drop in the machine's MemAvailable since no task ran. The next level is skipped when
its projected memory would leave less than RESERVE available or its projected starts would
overrun the runtime's time budget; from the top level's per-task cost in memory and in threads
(each takes a pid), the report projects how many tasks this machine could hold.

    .venv/bin/python bench/density.py [--quick]
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from common import SHIM_MISSING, Section, duration, main, ratio, table
from guests import build
from procfs import Footprint, available, footprint, machine_threads, pid_max
from stack import Stack, Workload, stack

LEVELS = (10, 50, 100, 200, 500, 1000, 1500, 2000, 3000, 5000)
QUICK_LEVELS = (2, 4)
BUDGET_SECONDS = 240.0  # per runtime, for starting tasks
QUICK_BUDGET_SECONDS = 15.0
RESERVE = 2 << 30  # bytes of MemAvailable never to go below
STARTERS = 8  # `ctr` commands in flight at once
MIB = 1 << 20


@dataclass(frozen=True)
class Level:
    tasks: int
    start_rate: float  # tasks started per second in this level's batch
    use: Footprint
    available_drop: int  # bytes of MemAvailable lost since no task ran
    machine_threads: int


@dataclass(frozen=True)
class Outcome:
    label: str
    levels: list[Level]
    stopped_by: str
    idle_available: int  # MemAvailable before any task ran
    retried: int  # starts that failed once and were retried
    teardown: str  # how stopping every task went


def _start(s: Stack, workload: Workload, count: int, ids: list[str]) -> list[str]:
    """Start `count` new tasks (their ids appended to `ids`), STARTERS at a time; the last error
    line of each start that failed."""
    batch = [s.new_id(f"idle-{workload.label}") for _ in range(count)]
    ids += batch

    def start(task: str) -> str | None:
        try:
            s.start_detached(workload, task)
        except AssertionError as exc:  # run_tool's failure, with ctr's stderr last
            return str(exc).strip().splitlines()[-1][:160]
        return None

    with ThreadPoolExecutor(STARTERS) as pool:
        return [error for error in pool.map(start, batch) if error]


def _running(s: Stack) -> int:
    listing = s.containerd.ctr("tasks", "list", timeout=120).stdout.splitlines()[1:]
    return sum(1 for line in listing if line.split()[-1:] == ["RUNNING"])


def _remove_all(s: Stack, ids: list[str]) -> str:
    """Kill and delete every task (`ctr tasks delete --force`), then the containers, a chunk
    of ids per ctr command; how it went.

    Tasks that do not stop in time are left to the stack's teardown sweep of containerd's
    mount namespace, with containerd killed first (its orderly stop would wait for each).
    """
    ctr = s.containerd.ctr
    chunks = [ids[i::STARTERS] for i in range(STARTERS) if ids[i::STARTERS]]

    def delete(chunk: list[str]) -> None:
        with contextlib.suppress(AssertionError):  # timed out on a task that would not die
            ctr("tasks", "delete", "--force", *chunk, timeout=30 + len(chunk), check=False)

    began = time.perf_counter()
    with ThreadPoolExecutor(STARTERS) as pool:
        list(pool.map(delete, chunks))
        if left := ctr("tasks", "list", "--quiet", check=False).stdout.split():
            assert s.containerd.proc is not None
            s.containerd.proc.kill()
            return f"{len(left)} tasks did not stop on SIGKILL; killed with their shims"
        list(pool.map(lambda chunk: ctr("containers", "delete", *chunk, timeout=600, check=False), chunks))
    return f"stopping and deleting all {len(ids)} took {duration(time.perf_counter() - began)}"


def climb(
    s: Stack,
    workload: Workload,
    levels: tuple[int, ...],
    budget: float,
    on_level: Callable[[], None] | None = None,
    before_teardown: Callable[[list[str]], None] | None = None,
) -> Outcome:
    """Start tasks level by level until the levels, the memory reserve or the time budget run out.
    `on_level` runs after each level is measured; `before_teardown` gets the ids of the tasks
    still running when at least one level was reached (http_density.py serves requests then)."""
    ids: list[str] = []  # every container created, for the teardown
    results: list[Level] = []
    idle_available = available()
    spent, stopped_by, retried, running = 0.0, "all levels reached", 0, 0
    try:
        for target in levels:
            more = target - running
            if results:
                last = results[-1]
                if spent + more / last.start_rate > budget:
                    stopped_by = f"time budget ({budget:.0f} s of starts)"
                    break
                if available() - more * last.available_drop / last.tasks < RESERVE:
                    stopped_by = f"memory (keeping {RESERVE / (1 << 30):.0f} GiB available)"
                    break
            began = time.perf_counter()
            failed = _start(s, workload, more, ids)
            retried += len(failed)
            if failed:  # each is retried once, under a new id
                failed = _start(s, workload, len(failed), ids)
            if failed:
                stopped_by = f"starting {target} tasks failed: {failed[0]}"
                break
            elapsed = time.perf_counter() - began
            spent += elapsed
            if (running := _running(s)) != target:
                stopped_by = f"only {running} of {target} tasks running"
                break
            results.append(Level(target, more / elapsed, footprint(s.containerd), idle_available - available(), machine_threads()))
            if on_level is not None:
                on_level()
        if before_teardown is not None and results:
            before_teardown(ids)
    finally:
        teardown = _remove_all(s, ids)
    return Outcome(workload.label, results, stopped_by, idle_available, retried, teardown)


def _rows(outcome: Outcome) -> list[list[str]]:
    rows, previous = [], Level(0, 0.0, Footprint(0, 0, 0), 0, 0)
    for level in outcome.levels:
        marginal = (level.use.rss - previous.use.rss) / (level.tasks - previous.tasks) / MIB
        rows.append(
            [
                outcome.label,
                str(level.tasks),
                f"{level.start_rate:.1f}",
                f"{level.use.rss / MIB:.0f}",
                f"{level.use.pss / MIB:.0f}",
                f"{marginal:.2f}",
                f"{level.use.pss / level.tasks / MIB:.2f}",
                f"{level.available_drop / level.tasks / MIB:.2f}",
                f"{level.use.threads / level.tasks:.1f}",
            ]
        )
        previous = level
    return rows


def _reach(outcome: Outcome) -> str:
    """How far K got, why it stopped, and how far memory and pids would let it go."""
    if not outcome.levels:
        return f"- {outcome.label}: no level completed ({outcome.stopped_by}); {outcome.teardown}."
    top = outcome.levels[-1]
    memory = top.available_drop / top.tasks
    threads = top.use.threads / top.tasks
    by_memory = int((outcome.idle_available - top.available_drop - RESERVE) / memory) if memory > 0 else None
    by_pids = int((pid_max() - top.machine_threads) / threads) if threads > 0 else None
    limits = [f"about {more} more by memory (keeping the reserve)" for more in [by_memory] if more is not None]
    limits += [f"about {more} more by kernel.pid_max ({pid_max()})" for more in [by_pids] if more is not None]
    retried = f" {outcome.retried} failed starts were retried once and then started." if outcome.retried else ""
    return (
        f"- {outcome.label}: reached {top.tasks} idle tasks; stopped by: {outcome.stopped_by}. Per task "
        f"{memory / MIB:.2f} MiB of MemAvailable and {threads:.1f} threads: {' and '.join(limits)}."
        f"{retried} Teardown: {outcome.teardown}."
    )


def _runc_sleep(s: Stack) -> Workload:
    return s.busybox("sleep", ["/bin/busybox", "sleep", "3600"])


def _wasm_idle(s: Stack) -> Workload | None:
    return s.component("idle", build("idle", s.containerd.workdir)) if s.shim else None


def _climb(make: Callable[[Stack], Workload | None], levels: tuple[int, ...], budget: float) -> Outcome | None:
    """One runtime's climb in a containerd of its own, so that the other's processes never count."""
    with stack() as s:
        workload = make(s)
        return climb(s, workload, levels, budget) if workload else None


def _summary(runc: Level | None, wasm: Level | None, shim_installed: bool) -> tuple[tuple[str, str, str, str, str], ...]:
    """Headlines: how many idle tasks each reached, and the PSS per task there."""
    absent = "-" if shim_installed else SHIM_MISSING
    tasks = [level.tasks if level else None for level in (wasm, runc)]
    pss = [level.use.pss / level.tasks / MIB if level else None for level in (wasm, runc)]
    baseline = "runc + busybox sleep"
    return (
        (
            "density: idle tasks reached",
            str(tasks[0] or absent),
            baseline,
            str(tasks[1] or "-"),
            ratio(tasks[0], tasks[1], lower_is_better=False),
        ),
        (
            "density: PSS per idle task at the highest K",
            f"{pss[0]:.2f} MiB" if pss[0] else absent,
            baseline,
            f"{pss[1]:.2f} MiB" if pss[1] else "-",
            ratio(pss[0], pss[1]),
        ),
    )


def run(quick: bool) -> Section:
    levels = QUICK_LEVELS if quick else LEVELS
    budget = QUICK_BUDGET_SECONDS if quick else BUDGET_SECONDS
    began = time.perf_counter()
    outcomes = [outcome for make in (_runc_sleep, _wasm_idle) if (outcome := _climb(make, levels, budget))]
    rows = [row for outcome in outcomes for row in _rows(outcome)]
    if len(outcomes) == 1:
        rows.append(["wasm-oci", SHIM_MISSING, *["-"] * 7])
    runc_top, wasm_top = (outcomes[i].levels[-1] if i < len(outcomes) and outcomes[i].levels else None for i in (0, 1))
    header = [
        "runtime",
        "idle tasks K",
        "starts/s (this batch)",
        "RSS total MiB",
        "PSS total MiB",
        "marginal RSS MiB/task",
        "PSS MiB/task",
        "MemAvailable drop MiB/task",
        "threads/task",
    ]
    return Section(
        "Density: idle long-running tasks",
        f"""K idle tasks running at once through one containerd, started {STARTERS} at a time with
`ctr run -d --null-io`, in levels {", ".join(map(str, levels))}. wasm-oci: bench/guests/idle.wat
(blocks in a WASI clock wait) on the wasm-oci shim; runc: the busybox image running
`busybox sleep 3600`, one containerd-shim-runc-v2 per task as `ctr` runs them. Each runtime
climbs in a containerd of its own. Memory is read from /proc at each level: the shim processes
(every process in containerd's mount namespace but containerd itself) and all their
descendants (runc's container processes). RSS counts shared pages (the shim's code) once per
process; PSS splits them between their users, so its sum is what the tasks really take; the
MemAvailable drop also counts containerd and the kernel (namespaces, cgroups, mounts). A level
is skipped when its projected memory would leave under {RESERVE >> 30} GiB available or its
projected starts would overrun {budget:.0f} s per runtime. The section took
{duration(time.perf_counter() - began)}.""",
        table(header, rows),
        "\n".join(_reach(outcome) for outcome in outcomes),
        _summary(runc_top, wasm_top, shim_installed=len(outcomes) > 1),
    )


if __name__ == "__main__":
    main(run)
