"""Start -> guest entry with a warm precompile cache: through containerd (from `ctr run`, and
inside the shim from its Start request), and for `wasm-oci run`.

Guest entry is a timestamp the guest takes itself: bench/guests/clock.wat prints the WASI
wall clock (ns since the epoch) as its first action; the runc baseline runs `busybox adjtimex`,
which prints the kernel's time (us) as its first action; starts are this process's
`time.time_ns()` just before spawning the command. Inside the shim, the shim times itself: when
the guest exits it logs `guest entered N ms after Start` with the task's id (from its Start
handler being called to the guest's thread calling the guest's entry), which containerd
copies into its log, where this benchmark reads it.

    .venv/bin/python bench/entry.py [--quick]
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import product
from common import SHIM_MISSING, Comparison, Section, alternate, comparisons, main
from guests import build
from stack import Stack, Workload, stack

RUNS, QUICK_RUNS = 21, 3
CLI_NOTE = """`wasm-oci run` is slower to enter its guest than the interpreter floor by what a Python CLI
imports before it can run anything; loading the precompiled component and instantiating it take
under a millisecond (see the engine section). Profiled with `python -X importtime`: click and
the CLI's command modules with the OCI API they use, wasmtime's native library and component
bindings, the engine. Fixed while profiling: `run` imported the signing stack (cryptography)
even without `--verify-key`, and the engine read wasmtime's version through
`importlib.metadata`; without them a whole `wasm-oci run` of clock.wasm went from ~172 ms to
~133 ms. What remains is the imports themselves, paid once per process: a resident process
(the shim's daemon, `serve`) pays them once, not per guest."""
NO_TIMESTAMPS = "(the shim logged no `guest entered`)"
_SHIM_ENTRY = re.compile(r"guest entered ([\d.]+) ms after Start")
_ADJTIMEX = re.compile(r"time\.tv_sec:\s*(\d+)\s+time\.tv_usec:\s*(\d+)")
_STATUS = re.compile(r"status:\s*(\d+)")
_STA_NANO = 0x2000


def guest_clock(stdout: str) -> int:
    return int(stdout.split(maxsplit=1)[0])


def adjtimex_clock(stdout: str) -> int:
    """busybox adjtimex's time in ns: its `tv_usec` holds nanoseconds when the kernel clock is in
    nanosecond mode (STA_NANO in `status`, which an NTP daemon may set at any time)."""
    found = _ADJTIMEX.search(stdout)
    status = _STATUS.search(stdout)
    if not found or not status:
        raise SystemExit(f"busybox adjtimex printed no time: {stdout!r}")
    fraction = int(found.group(2)) * (1 if int(status.group(1)) & _STA_NANO else 1000)
    return int(found.group(1)) * 1_000_000_000 + fraction


def shim_entry(log: str, task_id: str) -> float | None:
    """Start -> guest entry in seconds as the shim logged it for `task_id`, if it did."""
    mine = re.compile(rf"\b{re.escape(task_id)}\b")
    for line in log.splitlines():
        found = _SHIM_ENTRY.search(line)
        if found and mine.search(line):
            return float(found.group(1)) / 1e3
    return None


def through_ctr(s: Stack, workload: Workload, clock: Callable[[str], int]) -> tuple[float, float | None]:
    """`ctr run --rm` -> entry, and Start -> entry as the shim logged it (None where it did not)."""
    task = s.new_id("entry")
    began = time.time_ns()
    entered = clock(s.run(workload, task).stdout)
    return (entered - began) / 1e9, shim_entry(s.containerd.log_path.read_text(errors="replace"), task)


def from_command(argv: list[str], env: dict[str, str]) -> float:
    """Spawn -> the nanosecond timestamp the command prints first."""
    began = time.time_ns()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return (guest_clock(done.stdout) - began) / 1e9


def run(quick: bool) -> Section:
    runs = QUICK_RUNS if quick else RUNS
    inside: list[float] = []  # the shim's own Start -> entry timings
    with tempfile.TemporaryDirectory(prefix="wasm-oci-bench-") as tmp:
        clock = build("clock", Path(tmp))
        env = {**os.environ, "WASM_OCI_HOME": str(Path(tmp) / "home")}
        cli = [product.cli(), "run", str(clock)]
        floor = [product.python(), "-c", "import time; print(time.time_ns())"]
        from_command(cli, env)  # fills the precompile cache
        cli_runs, floor_runs = alternate(runs, lambda i: from_command(cli, env), lambda i: from_command(floor, env))
        with stack() as s:

            def through_shim(wasm: Workload) -> float:
                outside, shim_timing = through_ctr(s, wasm, guest_clock)
                inside.extend([shim_timing] if shim_timing is not None else [])
                return outside

            runc = s.busybox("adjtimex", ["/bin/busybox", "adjtimex"])
            wasm = s.component("clock", clock) if s.shim else None
            through_ctr(s, runc, adjtimex_clock)
            if wasm:
                through_ctr(s, wasm, guest_clock)
                shim_ctr, runc_runs = alternate(runs, lambda i: through_shim(wasm), lambda i: through_ctr(s, runc, adjtimex_clock)[0])
            else:
                shim_ctr, runc_runs = None, [through_ctr(s, runc, adjtimex_clock)[0] for _ in range(runs)]
    inside_missing = NO_TIMESTAMPS if shim_ctr else SHIM_MISSING
    rows = [
        Comparison("`ctr run --rm` -> guest entry", shim_ctr, runc_runs, "runc: `ctr run --rm` -> busybox entry"),
        Comparison(
            "shim Start request -> guest entry (shim timestamps)",
            inside or None,
            None,
            "(containerd-shim-runc-v2 logs no timings)",
            inside_missing,
        ),
        Comparison("`wasm-oci run clock.wasm` -> guest entry", cli_runs, floor_runs, "`python -c` -> first statement (interpreter floor)"),
    ]
    return Section(
        "Start -> guest entry (warm precompile cache)",
        f"""From the moment a run is asked for to the moment the guest's own code runs, with the
compiled component already in the precompile cache (one unmeasured run first). Guest entry is
a timestamp the guest takes as its first action (bench/guests/clock.wat prints the WASI wall
clock; the runc baseline runs `busybox adjtimex`, which prints the kernel's time); starts are
taken by this process just before spawning the command. The shim row is the shim's own
timing, from its Start handler being called to the guest's thread calling the guest's entry
(Create attached stdio and instantiated the guest; Start wakes its parked thread), as it logs
it (`guest entered N ms after Start`, copied into containerd's log). The interpreter
floor is this venv's Python starting and printing `time.time_ns()`: what any command written
in Python pays before its first line runs. {runs} runs each, interleaved in pairs.""",
        comparisons(rows),
        CLI_NOTE,
        tuple(row.summary() for row in rows),
    )


if __name__ == "__main__":
    main(run)
