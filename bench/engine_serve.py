"""`wasm-oci serve` throughput and latency against the same HTTP stack without Wasm.

Ours: `wasm-oci serve examples/http/http.wasm`, a fresh sandboxed instance per request.
Baseline: the same stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive and response headers,
with the handler (uppercase the body) in Python in the server process. Both are the same
server code path but for what produces the response, so the ratio isolates what a fresh Wasm
instance per request costs (CGI mapping, WASI setup, instantiate, run), not differences
between HTTP servers; a per-request CGI subprocess would flatter us (a process start is
~1 ms even for /bin/true), a C server would measure Python's HTTP parsing instead.

Each round runs a fixed client load (processes x threads, keep-alive connections, a 64-byte
POST) for --seconds against one server; rounds alternate between the two servers.

    .venv/bin/python bench/engine_serve.py [--rounds 3] [--seconds 5] [--clients 2x4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import REPO

BODY = b"the quick brown fox jumps over the lazy dog, 64 bytes of body..."
WASM_OCI = os.path.join(os.path.dirname(sys.executable), "wasm-oci")


class BaselineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as serve's handler

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).upper()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for name, value in (("X-Method", self.command), ("X-Path", self.path.partition("?")[0]), ("X-Query", self.path.partition("?")[2])):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
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
    until = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (began := time.perf_counter()) < until:
            conn.request("POST", "/bench?x=1", body=BODY)
            response = conn.getresponse()
            if response.status != 200 or response.read() != BODY.upper():
                raise SystemExit(f"bad response {response.status}")
            mine.append(time.perf_counter() - began)

    pool = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
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


def serve_baseline() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaselineHandler)
    print(f"Serving baseline on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="2x4", help="client processes x threads (connections) each")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        serve_baseline()
        return
    processes, threads = (int(n) for n in args.clients.split("x"))
    rates: dict[str, list[float]] = {"wasm-oci": [], "baseline": []}
    samples: dict[str, list[float]] = {"wasm-oci": [], "baseline": []}
    for _ in range(args.rounds):
        for kind in rates:
            latencies = round_for(kind, processes, threads, args.seconds)
            rates[kind].append(len(latencies) / args.seconds)
            samples[kind] += latencies
    print(f"{args.rounds} rounds x {args.seconds:.0f} s, {processes} client processes x {threads} keep-alive connections, 64-byte POST; {os.cpu_count()} CPUs")
    print("| server | requests/s (median of rounds) | p50 | p90 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind in rates:
        q = statistics.quantiles(samples[kind], n=100)
        print(f"| {kind} | {statistics.median(rates[kind]):.0f} | {q[49] * 1e3:.2f} ms | {q[89] * 1e3:.2f} ms | {q[98] * 1e3:.2f} ms |")
    ratio = statistics.median(rates["wasm-oci"]) / statistics.median(rates["baseline"])
    p50 = statistics.median(samples["wasm-oci"]) / statistics.median(samples["baseline"])
    print(f"\nratio wasm-oci / baseline: requests/s {ratio:.2f}, median latency {p50:.2f}")


if __name__ == "__main__":
    main()
