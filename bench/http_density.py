"""Density of HTTP functions: K idle HTTP functions at once through containerd, what each one
costs, and how fast an idle one answers its first request.

examples/http/http.wasm pushed with `--trigger http` (as `wasm-oci push --trigger http` does)
runs as K tasks of the wasm-oci shim, each `ctr run -d --null-io --net-host` with a
WASM_OCI_HTTP_ADDRESS of its own on 127.0.0.1, started by density.py's starter (several in
flight at once). At each level: the shim processes' memory (PSS, and private memory) and threads
from /proc (procfs.py), the machine's MemAvailable drop since no task ran, and the files the shim
holds open against its open-files limit. After the top level, a sample of functions never
requested before each gets one POST (connect to last byte, one at a time), then a second one
(warm); every answer must be 200 with the body uppercased. Then every function gets SIGTERM,
and all are deleted. The baseline is the plain idle wasm-oci task of density.py
(bench/guests/idle.wat), climbed through the same levels in a containerd of its own.

    .venv/bin/python bench/http_density.py [--quick]
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import density
from common import REPO, SHIM_MISSING, Section, alternate, duration, main, median, percentile, ratio, table
from density import STARTERS, Level, Outcome, _running, _wasm_idle
from images import push_component
from procfs import PROC, Footprint, _number, _processes, footprint
from stack import WASM_RUNTIME, Stack, Workload, stack

from services.containerd import ContainerdServer

HTTP = REPO / "examples" / "http" / "http.wasm"
ADDRESS = "WASM_OCI_HTTP_ADDRESS"  # where the shim listens for the task (docs/shim.md, shim/http_function.py)
LEVELS = (10, 100, 500, 1000)
QUICK_LEVELS = (2, 4)
BUDGET_SECONDS = 120.0  # for starting functions (and again for the baseline's tasks)
QUICK_BUDGET_SECONDS = 15.0
SAMPLE, QUICK_SAMPLE = 50, 4  # idle functions requested
REQUEST_SECONDS = 30.0  # socket timeout of a request
STOP_SECONDS = 90.0  # for every function to stop after its SIGTERM
FIRST_PORT, LAST_PORT = 20000, 32767  # below the kernel's ephemeral range (32768-60999)
BODY = b"hello from an idle function"
MIB = 1 << 20
BASELINE = "idle wasm-oci task (idle.wat)"


@dataclass
class Functions(Stack):
    """A stack whose detached tasks are HTTP functions on the host network, each listening on a
    127.0.0.1 port of its own (density.py's starter calls `start_detached`)."""

    ports: dict[str, int] = field(default_factory=dict)
    next_port: Iterator[int] = field(default_factory=lambda: itertools.count(FIRST_PORT))

    def start_detached(self, workload: Workload, task_id: str) -> None:
        port = self.ports[task_id] = next(self.next_port)
        env = f"{ADDRESS}=127.0.0.1:{port}"
        try:
            self.containerd.ctr(
                "run", "-d", "--null-io", "--net-host", "--env", env, "--runtime", workload.runtime, workload.image, task_id, timeout=120
            )
        except AssertionError:  # not started: no port to request (the retry takes another)
            del self.ports[task_id]
            raise


@dataclass(frozen=True)
class Shims:
    """The shim processes (every process in containerd's mount namespace but containerd) at one level."""

    processes: int
    private: int  # bytes, Private_Clean + Private_Dirty summed (USS): pages no other process maps
    open: int  # file descriptors
    limit: int  # the soft RLIMIT_NOFILE of the process holding the most


@dataclass(frozen=True)
class Requests:
    first: list[float]  # seconds, connect to the last byte of the response
    warm: list[float]  # the same functions' second request
    after: Footprint  # the shims once the sample was served


@dataclass(frozen=True)
class Climb:
    label: str
    outcome: Outcome  # the levels, why the climb stopped, the deletion
    shims: list[Shims]  # at each level
    requests: Requests | None = None
    stop: str = ""  # how the SIGTERMs went


def _free_ports(count: int) -> int:
    """The first port of `count` consecutive ones nothing listens on (bound here to check)."""
    base = FIRST_PORT
    while base + count <= LAST_PORT:
        with contextlib.ExitStack() as held:
            for port in range(base, base + count):
                sock = held.enter_context(socket.socket())
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    base = port + 1
                    break
            else:
                return base
    raise SystemExit(f"no {count} consecutive free ports on 127.0.0.1 from {FIRST_PORT} to {LAST_PORT}")


def _limit(pid: int) -> int:
    """The soft limit of open files of a process (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 0


def _shims(containerd: ContainerdServer) -> Shims:
    assert containerd.proc is not None
    pids = [pid for pid, _, ns in _processes() if ns == containerd.mount_ns and pid != containerd.proc.pid]
    opened = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            opened[pid] = len(os.listdir(f"/proc/{pid}/fd"))
    private = sum(_number(PROC / str(pid) / "smaps_rollup", name) for pid in pids for name in ("Private_Clean", "Private_Dirty"))
    busiest = max(opened, key=opened.__getitem__, default=None)
    return Shims(len(pids), private * 1024, sum(opened.values()), _limit(busiest) if busiest else 0)


def _request(port: int) -> float:
    """Seconds from connect to the whole response of one POST, which must be 200 with the body uppercased."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_SECONDS)
    try:
        conn.request("POST", "/", body=BODY)
        response = conn.getresponse()
        status, body = response.status, response.read()
    finally:
        conn.close()
    elapsed = time.perf_counter() - began
    if (status, body) != (200, BODY.upper()):
        raise SystemExit(f"the function on 127.0.0.1:{port} answered {status} {body[:100]!r}, not 200 {BODY.upper()!r}")
    return elapsed


def _serve_sample(s: Functions, size: int) -> Requests:
    """Two requests in a row to each of `size` functions spread over all started, one at a time:
    the pairs alternate, so that the machine's load weighs on the first and the second alike."""
    ports = sorted(s.ports.values())
    count = min(size, len(ports))
    sample = [ports[i * len(ports) // count] for i in range(count)]
    first, warm = alternate(count, lambda i: _request(sample[i]), lambda i: _request(sample[i]))
    return Requests(first, warm, footprint(s.containerd))


def _terminate(s: Functions, ids: list[str]) -> str:
    """SIGTERM to every function (`ctr tasks kill`, STARTERS at a time), then wait until none runs."""
    began = time.perf_counter()

    def kill(task: str) -> None:
        with contextlib.suppress(AssertionError):  # timed out: the deletion that follows kills it
            s.containerd.ctr("tasks", "kill", "--signal", "SIGTERM", task, timeout=30, check=False)

    with ThreadPoolExecutor(STARTERS) as pool:
        list(pool.map(kill, ids))
    signalled = time.perf_counter() - began
    while (running := _running(s)) and time.perf_counter() - began < STOP_SECONDS:
        time.sleep(0.2)
    stopped = time.perf_counter() - began
    if running:
        return f"SIGTERM to all took {duration(signalled)}; {running} still ran {duration(stopped)} after the first (then killed)"
    return f"SIGTERM to all {len(ids)} (`ctr tasks kill`, {STARTERS} at a time) took {duration(signalled)}, all stopped after {duration(stopped)}"


def climb(s: Stack, workload: Workload, label: str, levels: tuple[int, ...], budget: float, sample: int = 0) -> Climb:
    """density.climb, recording the shim's descriptors at each level; HTTP functions (a Functions
    stack) then answer `sample` of them, twice, and get SIGTERM before all are deleted."""
    shims: list[Shims] = []
    served: list[tuple[Requests, str]] = []

    def serve_then_stop(ids: list[str]) -> None:
        if isinstance(s, Functions):
            served.append((_serve_sample(s, sample), _terminate(s, ids)))

    outcome = density.climb(
        s, workload, levels, budget, on_level=lambda: shims.append(_shims(s.containerd)), before_teardown=serve_then_stop
    )
    requests, stop = served[0] if served else (None, "")
    return Climb(label, outcome, shims, requests, stop)


def _functions(levels: tuple[int, ...], budget: float, sample: int) -> Climb | None:
    with stack() as plain:
        if not plain.shim:
            return None
        s = Functions(plain.registry, plain.containerd, plain.shim, next_port=itertools.count(_free_ports(2 * levels[-1])))
        image = push_component(HTTP, s.registry.host, "bench/http", trigger="http")
        s.containerd.ctr("images", "pull", "--plain-http", image, timeout=120)
        return climb(s, Workload("http", WASM_RUNTIME, image), "HTTP function (http.wasm)", levels, budget, sample)


def _idle(levels: tuple[int, ...], budget: float) -> Climb | None:
    """The baseline, in a containerd of its own."""
    with stack() as s:
        workload = _wasm_idle(s)
        return climb(s, workload, BASELINE, levels, budget) if workload else None


def _per_task(run: Climb) -> float | None:
    """PSS per task at the top level, the daemon's share included (as the density section's headline)."""
    levels = run.outcome.levels
    return levels[-1].use.pss / levels[-1].tasks if levels else None


def _marginal(run: Climb) -> float | None:
    """Private memory per task from the first level to the top one, where the daemon's own
    cancels; None where the levels are too close for it to rise above the heap's noise."""
    levels, shims = run.outcome.levels, run.shims
    if len(levels) < 2:
        return None
    slope = (shims[-1].private - shims[0].private) / (levels[-1].tasks - levels[0].tasks)
    return slope if slope > 0 else None


def _rows(run: Climb) -> list[list[str]]:
    rows, previous, before = [], Level(0, 0.0, Footprint(0, 0, 0), 0, 0), Shims(0, 0, 0, 0)
    for level, shims in zip(run.outcome.levels, run.shims, strict=True):
        added = level.tasks - previous.tasks
        rows.append(
            [
                run.label,
                str(level.tasks),
                f"{level.start_rate:.1f}",
                f"{level.use.pss / MIB:.1f}",
                f"{shims.private / MIB:.1f}",
                f"{(level.use.pss - previous.use.pss) / added / MIB:.3f}",
                f"{(shims.private - before.private) / added / MIB:.3f}",
                f"{level.use.pss / level.tasks / MIB:.3f}",
                f"{level.available_drop / level.tasks / MIB:.2f}",
                f"{level.use.threads / level.tasks:.2f}",
                f"{shims.open} / {shims.limit}",
            ]
        )
        previous, before = level, shims
    return rows


def _reach(run: Climb) -> str:
    """How far K got and why it stopped, the open files against their limit, the teardown."""
    outcome = run.outcome
    if not outcome.levels:
        return f"- {run.label}: no level completed ({outcome.stopped_by}); {outcome.teardown}."
    top, shims = outcome.levels[-1], run.shims[-1]
    if len(run.shims) > 1:
        per_task = (shims.open - run.shims[0].open) / (top.tasks - outcome.levels[0].tasks)
    else:
        per_task = shims.open / top.tasks
    room = f"; at {per_task:.2f} per task, room for about {int((shims.limit - shims.open) / per_task)} more" if per_task > 0 else ""
    retried = f" {outcome.retried} failed starts were retried once and then started." if outcome.retried else ""
    stop = f"{run.stop}; then " if run.stop else ""
    return (
        f"- {run.label}: reached {top.tasks}; stopped by: {outcome.stopped_by}. {shims.processes} shim process(es) held "
        f"{shims.open} open files against a soft limit of {shims.limit}{room}.{retried} Teardown: {stop}{outcome.teardown}."
    )


def _latency(requests: Requests | None, top: Level | None) -> tuple[str, str]:
    """The latency table and what serving the sample left behind."""
    if requests is None or top is None:
        return "", ""
    rows = [
        [what, str(len(samples)), duration(median(samples)), duration(percentile(samples, 99)), duration(max(samples))]
        for what, samples in (("first request to an idle function", requests.first), ("second request (warm)", requests.warm))
    ]
    header = ["request", "functions", "median", "p99", "max"]
    after, served = requests.after, len(requests.first)
    left = (
        f"- Serving the {served} functions twice left the shim at {after.pss / MIB:.1f} MiB PSS "
        f"({(after.pss - top.use.pss) / MIB:+.1f} MiB, {(after.pss - top.use.pss) / served / MIB:+.3f} MiB per function served) "
        f"and {after.threads} threads ({after.threads - top.use.threads:+d}, {(after.threads - top.use.threads) / served:+.2f} per function "
        "served): what a function keeps once it has answered (its guest threads are started on its first request)."
    )
    return table(header, rows), left


def _summary(functions: Climb | None, baseline: Climb | None) -> tuple[tuple[str, str, str, str, str], ...]:
    """Headlines: functions reached, memory per function (PSS / K, and marginal private memory),
    the first request (median, p99) against a warm one."""
    reached = [run.outcome.levels[-1].tasks if run and run.outcome.levels else None for run in (functions, baseline)]
    requests = functions.requests if functions else None
    absent = SHIM_MISSING if functions is None else "-"
    rows = [
        (
            "HTTP density: idle HTTP functions reached",
            str(reached[0] or absent),
            BASELINE,
            str(reached[1] or "-"),
            ratio(reached[0], reached[1], lower_is_better=False),
        )
    ]
    for name, measure in (
        ("memory per idle HTTP function (PSS / K at the highest K)", _per_task),
        ("marginal memory per idle HTTP function (private, first to highest K)", _marginal),
    ):
        ours, theirs = (measure(run) if run else None for run in (functions, baseline))
        rows.append(
            (
                f"HTTP density: {name}",
                f"{ours / MIB:.3f} MiB" if ours else absent,
                BASELINE,
                f"{theirs / MIB:.3f} MiB" if theirs else "-",
                ratio(ours, theirs),
            )
        )
    for name, statistic in (("median", median), ("p99", lambda samples: percentile(samples, 99))):
        first, warm = (statistic(requests.first), statistic(requests.warm)) if requests else (None, None)
        rows.append(
            (
                f"HTTP density: first request to an idle HTTP function ({name})",
                duration(first) if first else absent,
                "second request, same functions",
                duration(warm) if warm else "-",
                ratio(first, warm),
            )
        )
    return tuple(rows)


def run(quick: bool) -> Section:
    levels = QUICK_LEVELS if quick else LEVELS
    budget = QUICK_BUDGET_SECONDS if quick else BUDGET_SECONDS
    size = QUICK_SAMPLE if quick else SAMPLE
    began = time.perf_counter()
    runs = [functions := _functions(levels, budget, size), baseline := _idle(levels, budget)]
    header = [
        "workload",
        "K",
        "starts/s (this batch)",
        "PSS total MiB",
        "private total MiB",
        "PSS MiB/task vs level below",
        "private MiB/task vs level below",
        "PSS MiB/task",
        "MemAvailable drop MiB/task",
        "threads/task",
        "shim open files / limit",
    ]
    rows = [row for run in runs if run for row in _rows(run)]
    top = functions.outcome.levels[-1] if functions and functions.outcome.levels else None
    latency, left = _latency(functions.requests if functions else None, top)
    notes = [_reach(run) for run in runs if run] or [f"- {SHIM_MISSING}"]
    return Section(
        "Density: idle HTTP functions",
        f"""K idle HTTP functions running at once through one containerd: examples/http/http.wasm
pushed with `--trigger http`, each task started with `ctr run -d --null-io --net-host --env
{ADDRESS}=127.0.0.1:PORT` (a port of its own on the host network), {STARTERS} starts in flight
at once, in levels {", ".join(map(str, levels))}. The shim's daemon serves every task of the
namespace: one process, one accept loop for all the listeners, a function's guest threads
started on its first request. At each level, from /proc: PSS and private memory (USS:
Private_Clean + Private_Dirty) summed over the shim processes (every process in containerd's
mount namespace but containerd), per task against the level below (the first level's includes
the daemon itself) and in all; the machine's MemAvailable drop since no task ran; threads; the
shims' open file descriptors against the soft open-files limit of the process holding most
(the daemon raises its soft limit to the hard one it inherits from containerd). PSS splits the
shim's shared libraries with every other process on the machine that maps them, so it moves
with what else runs; private memory does not, and the marginal memory per function is read
from it. A level is skipped when its projected starts would overrun {budget:.0f} s. After the top
level, {size} functions spread over all of them, never requested before, each get two POSTs of
{len(BODY)} bytes in a row (the first, then the warm one), one request at a time, each timed from
connect to the last byte of the response (a new connection each); every answer was checked to
be 200 with the body uppercased. Then every function gets SIGTERM (`ctr tasks kill`) and is deleted once stopped.
Baseline: the idle wasm-oci task of the density section (bench/guests/idle.wat, a command
blocked in a clock wait), through the same levels in a containerd of its own, deleted with
`ctr tasks delete --force`. The section took {duration(time.perf_counter() - began)}.""",
        table(header, rows) + (f"\n\n{latency}" if latency else ""),
        "\n".join([*notes, left] if left else notes),
        _summary(functions, baseline),
    )


if __name__ == "__main__":
    main(run)
