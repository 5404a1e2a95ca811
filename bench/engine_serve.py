"""`wasm-oci serve` throughput and latency against an in-process Python handler.

Ours: `wasm-oci serve examples/http/http.wasm` as users run it: its default workers (one
process per CPU sharing the listening socket), a fresh sandboxed instance per request.
Baseline: the stdlib's ThreadingHTTPServer in one process, HTTP/1.1 keep-alive and the same
response headers, with the handler (uppercase the body) in Python in the server process: what
a Python developer would write instead of a Wasm function. The two are not the same HTTP
stack: serve parses HTTP/1.1 itself (strictly, with deadlines and limits) on the same
socketserver base; measured with a stub in place of the guest, serve's HTTP side costs less
CPU per request than http.server's, so the ratio is what a fresh Wasm instance per request
costs (CGI mapping, WASI setup, instantiate, run, the guest thread), and what the workers win
back. A per-request CGI subprocess would flatter us (a process start is ~1 ms even for
/bin/true), a C server would measure Python's HTTP parsing instead.

Each round runs a fixed client load (processes x threads, keep-alive connections, a 64-byte
POST) for a few seconds against one server; rounds alternate between the two servers; a few
client loads (concurrency levels) are measured. The clients run on the same machine and share
its CPUs with the server: the CPU each side spends per request is measured too (the server's
from /proc, workers included; the clients' from os.times), since together they bound the rate.

    .venv/bin/python bench/engine_serve.py [--quick]
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import product
from common import REPO, Section, duration, main, median, percentile, ratio, table

BODY = b"the quick brown fox jumps over the lazy dog, 64 bytes of body..."
LEVELS = ("1x1", "2x4", "4x8")  # client processes x keep-alive connections each
QUICK_LEVELS = ("1x1", "1x4")
CPUS = os.cpu_count() or 1
SERVER, BASELINE = "`wasm-oci serve` http.wasm", "Python handler in process"
NOTE = f"""Where the rate stops: the clients (Python's http.client) run on the same {CPUS} CPUs and spend
about as much CPU per request as the baseline's server does (the CPU columns), so for either
server requests/s <= {CPUS} CPUs / (server CPU + client CPU per request). The baseline's server is
one process, its interpreter lock caps it near one CPU, about what the clients leave it. serve's
workers use every CPU (a process each, sharing the socket), but a request costs serve several
times the baseline's CPU. Profiled in one process, a fresh sandboxed run of http.wasm is ~0.27 ms:
the run spec and CGI variables ~20 us, Store ~10 us, WASI context ~55 us (argv and environment
set from one ctypes array each, stdin from bytes, stdout and stderr opened by path), store
limits and epoch watch ~15 us, instantiation ~75 us (~20 us of it the engine's memory creator in
Python), the guest's own run ~45 us (wasmtime's WASI calls), the store's teardown ~30 us. The
same server answering from Python instead of a guest spends ~0.16 ms on HTTP/1.1, and with
several connections per worker the interpreter lock's hand-offs between their threads add
~0.1-0.2 ms (one connection on one worker: ~0.47 ms per request; eight: ~0.66 ms). Where the
rate is CPU-bound (several connections), matching the baseline's rate would need serve's server
CPU per request to fit the last column ({CPUS} CPUs / the baseline's requests/s, less the clients'
CPU per request; with one connection the rate is bound by round trips instead, and the column is
no bound): less than a fresh sandboxed run of the guest costs by itself, before any HTTP.
wasmtime-py's own component API (Store, WasiConfig with the CGI environment and files,
Linker.instantiate, the run export) costs {{public_api}} of CPU per fresh run of http.wasm here,
measured by this section after its rounds; serve's direct C calls ~0.27 ms. Reusing instances
would break the fresh-sandbox-per-request guarantee, and wasmtime's C API offers no
pre-instantiated component to start from."""


class BaselineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as serve's handler

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).upper()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in (("X-Method", self.command), ("X-Path", self.path.partition("?")[0]), ("X-Query", self.path.partition("?")[2])):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_server(kind: str) -> tuple[subprocess.Popen[str], int]:
    if kind == "wasm-oci":
        argv = [product.cli(), "serve", str(REPO / "examples" / "http" / "http.wasm"), "--listen", "127.0.0.1:0"]
    else:
        argv = [sys.executable, __file__, "--baseline-server"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    if " on http://" not in banner:
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {banner}{proc.stderr.read()}")
    return proc, int(banner.rsplit(":", 1)[1])


def client(
    port: int,
    threads: int,
    seconds: float,
    method: str = "POST",
    path: str = "/bench?x=1",
    body: bytes = BODY,
    expect: bytes = BODY.upper(),
) -> tuple[list[float], float]:
    """One client process: `threads` keep-alive connections sending `method path` (with `body`,
    if any) until time is up, each answer checked (200, `expect`); latencies and the CPU seconds
    this process spent."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    cpu = os.times()
    until = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while (began := time.perf_counter()) < until:
                conn.request(method, path, body=body or None)
                response = conn.getresponse()
                if response.status != 200 or response.read() != expect:
                    raise ValueError(f"bad response {response.status}")
                mine.append(time.perf_counter() - began)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} of {threads} connections to port {port} failed: {errors[0]}")
    spent = os.times()
    return [sample for mine in latencies for sample in mine], spent.user + spent.system - cpu.user - cpu.system


def server_cpu(pid: int) -> float:
    """CPU seconds process `pid` and its children (serve's workers) have spent so far."""
    total = 0.0
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids.append(int(child))
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Round:
    latencies: list[float]
    server_cpu: float
    client_cpu: float


def round_for(kind: str, processes: int, threads: int, seconds: float) -> Round:
    return loaded(*start_server(kind), processes, threads, seconds)


def loaded(proc: subprocess.Popen[str], port: int, processes: int, threads: int, seconds: float, *request: Any) -> Round:
    """One round against a started server, which is stopped after: a warm-up (compile cache,
    connections, code paths, the workers' first instances), then the client load; `request`:
    client()'s method, path, body and expected answer."""
    try:
        client(port, 1, 0.5, *request)
        before = server_cpu(proc.pid)
        with ProcessPoolExecutor(processes) as pool:
            futures = [pool.submit(client, port, threads, seconds, *request) for _ in range(processes)]
            results = [future.result() for future in futures]
        spent = server_cpu(proc.pid) - before
        return Round([sample for latencies, _ in results for sample in latencies], spent, sum(cpu for _, cpu in results))
    finally:
        proc.terminate()
        proc.wait(10)


class BaselineServer(ThreadingHTTPServer):
    request_queue_size = 128  # as serve's: the stdlib's 5 resets connections under a burst of connects


def serve_baseline() -> None:
    server = BaselineServer(("127.0.0.1", 0), BaselineHandler)
    print(f"Serving baseline on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()


def measure(level: str, rounds: int, seconds: float) -> list[list[str]]:
    """Rows for one client load (PROCESSESxTHREADS): each server's rate, latency and CPU per request, rounds alternating."""
    processes, threads = (int(n) for n in level.split("x"))
    kinds = ("wasm-oci", "baseline")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind in kinds:
            measured = round_for(kind, processes, threads, seconds)
            rates[kind].append(len(measured.latencies) / seconds)
            samples[kind] += measured.latencies
            count = max(1, len(measured.latencies))
            cpu[kind].append((measured.server_cpu / count, measured.client_cpu / count))
    versus = ratio(median(rates["wasm-oci"]), median(rates["baseline"]), lower_is_better=False)
    # The CPU a request may cost serve for it to match the baseline's rate on these CPUs,
    # its clients' own CPU per request taken out: what 1.0x would take, from this level's figures.
    allowed = CPUS / median(rates["baseline"]) - median([client for _, client in cpu["wasm-oci"]])
    return [
        [
            str(processes * threads),
            name,
            f"{median(rates[kind]):.0f}",
            *(duration(percentile(samples[kind], q)) for q in (50, 90, 99)),
            versus if kind == "wasm-oci" else "",
            duration(median([server for server, _ in cpu[kind]])),
            duration(median([client for _, client in cpu[kind]])),
            duration(allowed) if kind == "wasm-oci" else "",
        ]
        for kind, name in (("wasm-oci", SERVER), ("baseline", BASELINE))
    ]


def public_api_run_cpu(runs: int) -> float:
    """CPU seconds per fresh run of http.wasm through wasmtime-py's own component API, in this process:
    what a Python host pays for one sandboxed request without any HTTP, as a point of reference."""
    from wasmtime import Engine, Store, WasiConfig
    from wasmtime.component import Component, Linker

    engine = Engine()
    component = Component.from_file(engine, str(REPO / "examples" / "http" / "http.wasm"))
    linker = Linker(engine)
    linker.add_wasip2()
    with tempfile.TemporaryDirectory(prefix="wasm-oci-bench-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(b"x" * 64)

        def fresh_run() -> None:
            store = Store(engine)
            wasi = WasiConfig()
            wasi.env = [("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "64"), ("PATH_INFO", "/")]
            wasi.stdin_file, wasi.stdout_file, wasi.stderr_file = str(body), f"{tmp}/out", f"{tmp}/err"
            store.set_wasi(wasi)
            instance = linker.instantiate(store, component)
            func = instance.get_func(store, instance.get_export_index(store, "run", instance.get_export_index(store, "wasi:cli/run@0.2.0")))
            if func is None or func(store).tag != "ok":
                raise SystemExit("benchmark: http.wasm did not run through wasmtime-py")

        for _ in range(runs // 10):
            fresh_run()
        began = time.process_time()
        for _ in range(runs):
            fresh_run()
        return (time.process_time() - began) / runs


def run(quick: bool) -> Section:
    levels, rounds, seconds = (QUICK_LEVELS, 1, 0.5) if quick else (LEVELS, 3, 3.0)
    rows = [row for level in levels for row in measure(level, rounds, seconds)]
    public_api = duration(public_api_run_cpu(200 if quick else 2000))
    headlines = tuple(
        (f"HTTP requests/s, {ours[0]} connection(s)", f"{ours[2]} req/s", BASELINE, f"{base[2]} req/s", ours[6])
        for ours, base in zip(rows[::2], rows[1::2], strict=False)
    )
    return Section(
        "The HTTP trigger: `wasm-oci serve`",
        f"""`wasm-oci serve examples/http/http.wasm` as users run it (its default workers: {CPUS} processes,
one per CPU, sharing the listening socket; a fresh sandboxed instance per request) against
the stdlib's ThreadingHTTPServer in one process with the handler (uppercase the body) in Python:
keep-alive and the same response headers, each server with its own HTTP parser. Clients:
keep-alive connections POSTing 64 bytes as fast as answers come, from client processes x
threads = {", ".join(levels)}, on the same {CPUS} CPUs as the server; {rounds} round(s) of {seconds:.1f} s
per server and level, alternating servers. Requests/s is the median over rounds; latency
percentiles pool every request; CPU per request is the median over rounds of the server's
(workers included) and the clients' CPU time divided by the requests answered.""",
        table(
            [
                "connections",
                "server",
                "requests/s",
                "p50",
                "p90",
                "p99",
                "requests/s wasm-oci / baseline",
                "server CPU / request",
                "client CPU / request",
                "server CPU / request 1.0x allows",
            ],
            rows,
            text=(1,),
        ),
        NOTE.format(public_api=public_api),
        headlines,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--baseline-server"]:
        serve_baseline()
    else:
        main(run)
