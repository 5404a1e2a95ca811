"""Run every benchmark and regenerate docs/benchmarks.md.

    .venv/bin/python bench/run.py            # full run (~15 min on 2 cores), rewrites the doc
    .venv/bin/python bench/run.py --quick    # smoke run (< 1 min): the same report on stdout only

Each module's `run(quick) -> Section` measures wasm-oci and its baseline in the same process,
interleaved where they take turns; the report is assembled from the sections in this order.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path

import api_throughput
import cold_start
import density
import distribution
import engine_run
import engine_serve
import entry
import http_density
import http_proxy
import procfs
import product
import throughput
from common import REPO, SUMMARY_HEADER, Section, duration, table
from stack import SHIM_INSTALL

DOC = REPO / "docs" / "benchmarks.md"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out[0] if out else "?"


def machine() -> str:
    from services.tools import find_tool

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return "\n".join(
        [
            f"- {platform.platform()}; {os.cpu_count()} CPUs ({cpu}); {mem_kb / 1024 / 1024:.0f} GiB RAM",
            f"- Python {platform.python_version()}; wasmtime (Python) {version('wasmtime')}",
            f"- {_version([find_tool('containerd'), '--version'])}; {_version([find_tool('runc'), '--version'])}",
            f"- oras {_version([find_tool('oras'), 'version'])}",
            f"- wasm-oci under test: {product.INSTALL}; the shim: {SHIM_INSTALL} for that install, written into a private dir first on containerd's PATH",
            f"- run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        ]
    )


def _commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "?"
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def previous_summary(doc: str) -> tuple[str, dict[str, list[str]]]:
    """The report this run replaces: when it ran (its Machine section's `run at` line, with the
    commit where it says one) and its summary rows by measurement."""
    when = next((line.removeprefix("- run at ").strip() for line in doc.splitlines() if line.startswith("- run at ")), "?")
    summary = doc.split("## Summary", 1)[1].split("\n## ", 1)[0] if "## Summary" in doc else ""
    rows = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == len(SUMMARY_HEADER) and cells[0] not in (SUMMARY_HEADER[0], "---"):
            rows[cells[0]] = cells
    return when, rows


def since_previous(rows: list[list[str]], previous: tuple[str, dict[str, list[str]]]) -> str:
    """Each summary row next to the same row of the report this one replaces: the before and
    after of whatever changed in between (docs/benchmarks.md is rewritten on every full run)."""
    when, before = previous
    compared = [[row[0], before[row[0]][1], row[1], before[row[0]][4], row[4]] for row in rows if row[0] in before]
    if not compared:
        return ""
    header = ["measurement", "wasm-oci before", "wasm-oci now", "ratio to baseline before", "ratio now"]
    return f"""## Since the previous report

The previous full report (run at {when}) against this one, row by row: each ratio is to the
baseline measured in its own run.

{table(header, compared, text=(0,))}
"""


def steal_line(steals: list[tuple[str, float]]) -> str:
    """What the hypervisor took of this VM's CPUs per section: a section with much steal ran on
    a slower machine than its neighbours in this report (both sides of its ratios alike, but a
    CPU-bound side more), so its figures compare less well with other runs'."""
    if not steals:
        return ""
    parts = ", ".join(f"{title} {share:.0%}" for title, share in steals)
    return f"\n- CPU steal (time the hypervisor gave other guests) per section: {parts}"


def report(
    sections: list[Section],
    quick: bool,
    took: float,
    previous: tuple[str, dict[str, list[str]]] = ("?", {}),
    steals: list[tuple[str, float]] | None = None,
) -> str:
    rows = [row for section in sections for row in section.summary]
    mode = "`--quick` (smoke run: few samples, small sizes; not a result)" if quick else "full"
    body = "\n".join(section.markdown() for section in sections)
    return f"""# Benchmarks

wasm-oci against what users would run instead, each pair measured in the same invocation on the
same machine: figures are medians, and a ratio is wasm-oci / baseline, so machine noise mostly
cancels. `better`/`worse` in the ratio column reads the same way for times, rates and sizes.
Rows that need the containerd shim run it as docs/shim.md installs it (the fast launcher of
`python -m wasm_oci.shim.launcher DIR`, in a private dir on containerd's PATH); they say
`(shim not installed)` only where that launcher could not be written (wasm_oci.shim not importable).

## Commands

```sh
./tests/tools/install-system-deps.sh     # peers: containerd, runc, registry, oras, busybox-static
.venv/bin/python bench/run.py            # everything, rewrites this file (about 15 min on 2 cores)
.venv/bin/python bench/run.py --quick    # the smoke run CI executes (tests/test_bench_smoke.py)
.venv/bin/python bench/MODULE.py [--quick]   # one section: cold_start, throughput, api_throughput,
                                         # entry, density, http_density, distribution, engine_run,
                                         # engine_serve, http_proxy
```

containerd runs privately as the tests run it (tests/services/containerd.py: its own mount
namespace, state in a temp dir), so the benchmarks need root, as containerd does.

## Machine

{machine()}
- commit {_commit()}; mode: {mode}; took {duration(took)}{steal_line(steals or [])}

## Summary

{table(SUMMARY_HEADER, rows, text=(0, 2))}

{since_previous([list(row) for row in rows], previous)}
{body}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; prints the report, does not rewrite the doc")
    parser.add_argument("--tasks", type=int, default=throughput.TASKS, help="throughput: tasks in all")
    parser.add_argument("--concurrency", type=int, default=throughput.CONCURRENCY, help="throughput: tasks at once")
    args = parser.parse_args()
    modules: list[Callable[[bool], Section]] = [
        cold_start.run,
        partial(throughput.run, tasks=args.tasks, concurrency=args.concurrency),
        api_throughput.run,
        entry.run,
        density.run,
        http_density.run,
        distribution.run,
        engine_run.run,
        engine_serve.run,
        http_proxy.run,
    ]
    began = time.perf_counter()
    sections = []
    steals = []
    for run in modules:
        started, (total, stolen) = time.perf_counter(), procfs.cpu_ticks()
        sections.append(run(args.quick))
        after, stolen_after = procfs.cpu_ticks()
        steals.append((sections[-1].title, (stolen_after - stolen) / max(1, after - total)))
        print(f"{sections[-1].title}: {duration(time.perf_counter() - started)}, steal {steals[-1][1]:.0%}", file=sys.stderr)
    previous = previous_summary(DOC.read_text()) if DOC.exists() else ("?", {})
    text = report(sections, args.quick, time.perf_counter() - began, previous, steals)
    if args.quick:
        print(text)
        return
    DOC.write_text(text)
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
