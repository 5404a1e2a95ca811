"""Cold start through containerd: `ctr run --rm` of the hello component on the wasm-oci shim vs a
runc container (static busybox) printing the same line. Whole-command wall time, interleaved.

    .venv/bin/python bench/cold_start.py [--quick]
"""

from __future__ import annotations

import subprocess

from common import Comparison, Section, alternate, comparisons, main, stopwatch
from guests import HELLO
from stack import Outputs, Stack, Workload, stack

GREETING = "Hello from wasm-oci!"
RUNS, QUICK_RUNS = 21, 3
NOTE = """Both figures include what `ctr run` itself costs (a Go client process, image and snapshot
lookups, FIFOs, and the Create, Start, Wait and Delete calls through containerd), alike for
both runtimes; the runtime's own share is runc setting up the container's namespaces and
cgroups and exec'ing busybox, against the wasm-oci shim's calls and the instantiation of a
precompiled component. The start -> entry section splits the time further."""


def once(s: Stack, workload: Workload, outputs: Outputs) -> float:
    """One `ctr run --rm`; its output goes to `outputs` to be checked."""
    done: list[subprocess.CompletedProcess[str]] = []
    elapsed = stopwatch(lambda: done.append(s.run(workload, s.new_id("cold"))))
    outputs.check(workload, done[0].stdout)
    return elapsed


def run(quick: bool) -> Section:
    runs = QUICK_RUNS if quick else RUNS
    outputs = Outputs(GREETING)
    with stack() as s:
        runc = s.busybox("echo", ["/bin/busybox", "echo", GREETING])
        wasm = s.component("hello", HELLO) if s.shim else None
        for workload in filter(None, (runc, wasm)):
            once(s, workload, outputs)  # unpacks the snapshot, fills the precompile cache
        if wasm:
            ours, baseline = alternate(runs, lambda i: once(s, wasm, outputs), lambda i: once(s, runc, outputs))
        else:
            ours, baseline = None, [once(s, runc, outputs) for _ in range(runs)]
    row = Comparison("cold start: `ctr run --rm` hello, whole command", ours, baseline, "runc + busybox echo")
    return Section(
        "Cold start through containerd",
        f"""Each run is a whole `ctr run --rm --runtime RUNTIME IMAGE ID` against a private containerd:
a new task from an image already pulled, its output checked, the task deleted. wasm-oci:
`io.containerd.wasm-oci.v1` running examples/hello/hello.wasm pushed with `wasm_oci.oci.distribution.push`
(image format) and pulled with `ctr images pull --plain-http`; baseline: `io.containerd.runc.v2`
with runc running a static busybox image built by bench/images.py, Cmd
`busybox echo "{GREETING}"`. One unmeasured run of each first (snapshot unpack, precompile
cache), then {runs} runs of each, interleaved; every run must exit 0 and print the greeting.""",
        comparisons([row]),
        "\n\n".join(filter(None, [NOTE, outputs.note()])),
        (row.summary(),),
    )


if __name__ == "__main__":
    main(run)
