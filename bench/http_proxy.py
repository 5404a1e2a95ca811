"""wasi:http proxy components: `wasm-oci serve` against `wasmtime serve` on the same component.

Both servers run the same .wasm, a fresh instance per request (wasmtime serve's default for a
WASI 0.2 component, `--max-instance-reuse-count 1`), with the same limits: a 10 s timeout per
request (epoch interruption on both sides) and 128 MiB of linear memory, the guest's stdout
and stderr available (`-S cli` for wasmtime serve; serve always gives them). Ours: `wasm-oci
serve GUEST` as users run it, its default workers (one process per CPU sharing the socket).
The reference: `wasmtime serve -S cli -W timeout=10s -W max-memory-size=134217728 GUEST`, one
process with a thread per CPU (tokio), compiled ahead of time (`wasmtime compile`: ours reads
its own compile cache, warm before the first round). Guests: the hand-written fixed.wat (a few
KB: the servers' own cost per request) and the componentize-py app (~20 MB: a real guest's
instantiation). Clients: bench/engine_serve.py's, GET / on keep-alive connections, each answer
checked, from 1 process x 1 connection and from 2 processes x 4 connections, on the same CPUs
as the server; rounds alternate between the servers.

    .venv/bin/python bench/http_proxy.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import product
from common import Section, duration, main, median, percentile, ratio, table
from engine_serve import Round, loaded

from services import proxy_components

LEVELS = ("1x1", "2x4")  # client processes x keep-alive connections each
CPUS = os.cpu_count() or 1
TIMEOUT, MEMORY = 10, 128 << 20
WASMTIME_FLAGS = ("-Scli", f"-Wtimeout={TIMEOUT}s", f"-Wmax-memory-size={MEMORY}")
OURS, THEIRS = "wasm-oci serve", "wasmtime serve"
GUESTS: dict[str, tuple[Callable[[], Path], bytes]] = {
    "fixed.wat": (proxy_components.fixed, b"hello from wat\n"),
    "componentize-py app": (proxy_components.python_app, b"hello"),
}
NOTE = f"""What the gap is made of. For the fixed guest, the servers' own cost per request: `wasmtime
serve` is hyper and Wasmtime's wasi:http in Rust, where serve parses HTTP/1.1 in Python and hosts
wasi:http and wasi:io in Python (engine/proxy: each of the guest's stream and fields calls a
Python callback through ctypes). In-process, the proxy host answers fixed.wat in ~0.56 ms of
CPU buffered and ~0.9 ms streamed (as serve answers, so that a body goes out while the guest
writes it); the difference is the thread the host starts per streamed request for the guest:
the buffered answer run on a fresh thread costs the same ~0.9 ms (starting and joining a Python
thread is ~0.1 ms; the rest goes with a thread's first call into Wasmtime, presumably its
per-thread set-up and tear-down). For the componentize-py app,
instantiation dominates: Wasmtime maps its ~20 MB memory image copy-on-write (memory-init-cow,
its default), where serve's engine keeps copy-on-write off for its memory accounting and copies
the image into each instance (~8 ms of the ~11 ms a request costs in-process). Requests/s is
bounded by the {CPUS} CPUs the clients share with the server."""


def start(server: str, wasm: Path) -> tuple[subprocess.Popen[str], int]:
    if server == OURS:
        argv = [product.cli(), "serve", str(wasm), "--listen", "127.0.0.1:0", "--timeout", str(TIMEOUT), "--memory", str(MEMORY)]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        banner = proc.stderr.readline()  # after the guest is loaded: compiled once, then from the cache
        if " on http://" not in banner:
            proc.kill()
            raise SystemExit(f"{OURS} did not start: {banner}{proc.stderr.read()}")
        return proc, int(banner.rsplit(":", 1)[1])
    process, authority = proxy_components.wasmtime_serve(wasm, *WASMTIME_FLAGS)
    return process, int(authority.rsplit(":", 1)[1])


def round_for(server: str, wasm: Path, expect: bytes, processes: int, threads: int, seconds: float) -> Round:
    return loaded(*start(server, wasm), processes, threads, seconds, "GET", "/", b"", expect)


def measure(guest: str, level: str, rounds: int, seconds: float) -> list[list[str]]:
    """Rows for one guest and client load: each server's rate, latency and CPU per request."""
    build, expect = GUESTS[guest]
    wasm = build()
    processes, threads = (int(n) for n in level.split("x"))
    servers = (OURS, THEIRS)
    rates: dict[str, list[float]] = {server: [] for server in servers}
    samples: dict[str, list[float]] = {server: [] for server in servers}
    cpu: dict[str, list[tuple[float, float]]] = {server: [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            measured = round_for(server, wasm, expect, processes, threads, seconds)
            rates[server].append(len(measured.latencies) / seconds)
            samples[server] += measured.latencies
            count = max(1, len(measured.latencies))
            cpu[server].append((measured.server_cpu / count, measured.client_cpu / count))
    versus = ratio(median(rates[OURS]), median(rates[THEIRS]), lower_is_better=False)
    return [
        [
            guest,
            str(processes * threads),
            server,
            f"{median(rates[server]):.0f}",
            *(duration(percentile(samples[server], q)) for q in (50, 99)),
            versus if server == OURS else "",
            duration(median([spent for spent, _ in cpu[server]])),
            duration(median([spent for _, spent in cpu[server]])),
        ]
        for server in servers
    ]


def run(quick: bool) -> Section:
    rounds, seconds = (1, 0.5) if quick else (3, 3.0)
    for build, _ in GUESTS.values():  # built (componentize-py: ~30 s) and compiled by both servers before any round
        wasm = build()
        for server in (OURS, THEIRS):
            proc, _ = start(server, wasm)
            proc.terminate()
            proc.wait(10)
    rows = [row for guest in GUESTS for level in LEVELS for row in measure(guest, level, rounds, seconds)]
    headlines = tuple(
        (f"wasi:http proxy requests/s, {ours[0]}, {ours[1]} connection(s)", f"{ours[3]} req/s", THEIRS, f"{theirs[3]} req/s", ours[6])
        for ours, theirs in zip(rows[::2], rows[1::2], strict=True)
    )
    return Section(
        "wasi:http proxy components: `wasm-oci serve` vs `wasmtime serve`",
        f"""The same component served by `wasm-oci serve GUEST --timeout {TIMEOUT} --memory {MEMORY}` (its
default workers: {CPUS} processes sharing the socket) and by `wasmtime serve {" ".join(WASMTIME_FLAGS)} GUEST`
(precompiled): a fresh instance per request on both, a {TIMEOUT} s timeout, {MEMORY >> 20} MiB of linear
memory, stdout and stderr given to the guest. Guests: fixed.wat (hand-written, a few KB: the
answer is 15 bytes) and the componentize-py app of tests/fixtures/proxy (~20 MB; GET / answers
"hello"). Clients: bench/engine_serve.py's, GET / on keep-alive connections as fast as answers
come, from client processes x connections = {", ".join(LEVELS)}, on the same {CPUS} CPUs as the server;
{rounds} round(s) of {seconds:.1f} s per server, guest and level, alternating servers. Requests/s is the
median over rounds; p50/p99 pool every request; CPU per request is the median over rounds of
the server's (workers included) and the clients' CPU time over the requests answered.""",
        table(
            [
                "guest",
                "connections",
                "server",
                "requests/s",
                "p50",
                "p99",
                "requests/s wasm-oci / wasmtime",
                "server CPU / request",
                "client CPU / request",
            ],
            rows,
            text=(0, 2),
        ),
        NOTE,
        headlines,
    )


if __name__ == "__main__":
    main(run)
