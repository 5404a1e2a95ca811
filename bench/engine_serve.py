"""`wasm-oci serve` throughput and latency against the same HTTP stack without Wasm.

Ours: `wasm-oci serve examples/http/http.wasm`, a fresh sandboxed instance per request.
Baseline: the same stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive and response headers,
with the handler (uppercase the body) in Python in the server process. Both are the same
server code path but for what produces the response, so the ratio isolates what a fresh Wasm
instance per request costs (CGI mapping, WASI setup, instantiate, run), not differences
between HTTP servers; a per-request CGI subprocess would flatter us (a process start is
~1 ms even for /bin/true), a C server would measure Python's HTTP parsing instead.

Each round runs a fixed client load (processes x threads, keep-alive connections, a 64-byte
POST) for a few seconds against one server; rounds alternate between the two servers; a few
client loads (concurrency levels) are measured.

    .venv/bin/python bench/engine_serve.py [--quick]
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import REPO, Section, duration, main, median, percentile, ratio, table

BODY = b"the quick brown fox jumps over the lazy dog, 64 bytes of body..."
WASM_OCI = os.path.join(os.path.dirname(sys.executable), "wasm-oci")
LEVELS = ("1x1", "2x4", "4x8")  # client processes x keep-alive connections each
QUICK_LEVELS = ("1x1", "1x4")
SERVER, BASELINE = "`wasm-oci serve` http.wasm", "Python handler, same server"
NOTE = """Why `serve` is behind: profiled in-process (cProfile, and `CgiServer.respond` timed without
HTTP), a request cost ~0.25 ms of per-request sandbox set-up and run (a Store, a WASI context
with the CGI environment and the body, memfds for stdout and stderr, instantiation, the call,
the response parse) where the Python handler costs a few microseconds; and every one of those
wasmtime calls releases and retakes the GIL, which under several request threads turns into
context switches (see the engine section), so requests/s stop growing past one connection.
What would lift it: worker processes sharing the listening socket, so that guests run in
parallel without sharing a GIL (not done yet); reusing instances would break the fresh-sandbox-
per-request guarantee, and wasmtime's C API offers no pre-instantiated component to start from."""


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
        argv = [WASM_OCI, "serve", str(REPO / "examples" / "http" / "http.wasm"), "--listen", "127.0.0.1:0"]
    else:
        argv = [sys.executable, __file__, "--baseline-server"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    if " on http://" not in banner:
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {banner}{proc.stderr.read()}")
    return proc, int(banner.rsplit(":", 1)[1])


def client(port: int, threads: int, seconds: float) -> list[float]:
    """One client process: `threads` keep-alive connections POSTing until time is up; latencies."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    until = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while (began := time.perf_counter()) < until:
                conn.request("POST", "/bench?x=1", body=BODY)
                response = conn.getresponse()
                if response.status != 200 or response.read() != BODY.upper():
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
    return [sample for mine in latencies for sample in mine]


def round_for(kind: str, processes: int, threads: int, seconds: float) -> list[float]:
    proc, port = start_server(kind)
    try:
        client(port, 1, 0.5)  # warm up: compile cache, connections, code paths
        with ProcessPoolExecutor(processes) as pool:
            futures = [pool.submit(client, port, threads, seconds) for _ in range(processes)]
            return [sample for future in futures for sample in future.result()]
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
    """Rows for one client load (PROCESSESxTHREADS): each server's rate and latency, rounds alternating."""
    processes, threads = (int(n) for n in level.split("x"))
    rates: dict[str, list[float]] = {"wasm-oci": [], "baseline": []}
    samples: dict[str, list[float]] = {"wasm-oci": [], "baseline": []}
    for _ in range(rounds):
        for kind, rate in rates.items():
            latencies = round_for(kind, processes, threads, seconds)
            rate.append(len(latencies) / seconds)
            samples[kind] += latencies
    versus = ratio(median(rates["wasm-oci"]), median(rates["baseline"]), lower_is_better=False)
    return [
        [
            str(processes * threads),
            name,
            f"{median(rates[kind]):.0f}",
            *(duration(percentile(samples[kind], q)) for q in (50, 90, 99)),
            versus if kind == "wasm-oci" else "",
        ]
        for kind, name in (("wasm-oci", SERVER), ("baseline", BASELINE))
    ]


def run(quick: bool) -> Section:
    levels, rounds, seconds = (QUICK_LEVELS, 1, 0.5) if quick else (LEVELS, 3, 3.0)
    rows = [row for level in levels for row in measure(level, rounds, seconds)]
    headlines = tuple(
        (f"HTTP requests/s, {ours[0]} connection(s)", f"{ours[2]} req/s", BASELINE, f"{base[2]} req/s", ours[6])
        for ours, base in zip(rows[::2], rows[1::2], strict=False)
    )
    return Section(
        "The HTTP trigger: `wasm-oci serve`",
        f"""`wasm-oci serve examples/http/http.wasm` (a fresh sandboxed instance per request) against the
same stdlib ThreadingHTTPServer with the handler (uppercase the body) in Python in the server
process: the same HTTP stack, keep-alive and response headers, so the ratio isolates what a
fresh Wasm instance per request costs (CGI mapping, WASI setup, instantiate, run). Clients:
keep-alive connections POSTing 64 bytes as fast as answers come, from client processes x
threads = {", ".join(levels)}; {rounds} round(s) of {seconds:.1f} s per server and level, alternating
servers. Requests/s is the median over rounds; latency percentiles pool every request.""",
        table(["connections", "server", "requests/s", "p50", "p90", "p99", "requests/s wasm-oci / baseline"], rows, text=(1,)),
        NOTE,
        headlines,
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--baseline-server"]:
        serve_baseline()
    else:
        main(run)
