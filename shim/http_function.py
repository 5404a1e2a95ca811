"""A task that is an HTTP function: its guest answers HTTP requests in the task's network.

An image packaged with `--trigger http` (label `dev.wasm-oci.trigger`), or any Wasm task whose
environment says `WASM_OCI_TRIGGER=http`, is not run once: from Start until it is stopped the
daemon listens on `WASM_OCI_HTTP_ADDRESS` (default 0.0.0.0:8080) inside the task's network
namespace (netns.py: the pod's under Kubernetes) and answers every request with a fresh
instance of the guest, CGI-style: the same HTTP trigger as `wasm-oci serve` (engine/serve/),
with its limits and hardening. The listening socket is bound at Create, so a port in use or a
network namespace that is gone fails Create with a message, not Start.

Limits, from the task's environment (an image sets defaults with `package --env`, a pod spec
overrides them): WASM_OCI_HTTP_CONCURRENCY guests at once (default 4), WASM_OCI_HTTP_TIMEOUT
seconds per request (default 30; 504 after it), WASM_OCI_HTTP_MAX_BODY bytes of request body
(default 16 MiB; 413 beyond). A wasi:http proxy guest's outgoing requests are refused unless
WASM_OCI_HTTP_ALLOW_OUTBOUND names their host; allowed ones connect from the task's network
namespace (netns.connect), not the daemon's. The container's memory limit is shared out: each instance may
hold limit / concurrency, so all of them together stay within it. Guest threads join the
container's CPU cgroup, so a CPU limit holds over the function's guests.

Stop: SIGTERM (or SIGINT, SIGHUP, SIGQUIT) stops accepting, closes idle keep-alive connections
and lets the requests in flight finish (each within its request timeout), then the task exits
0: a graceful shutdown within Kubernetes' grace period. SIGKILL ends the guests running and
cuts every connection at once: exit 137. Each response is logged on the task's stdout
(`client "METHOD /path HTTP/1.1" status bytes time`), each guest failure on its stderr; a
client that does not read them loses lines, never stalls a request.
"""

from __future__ import annotations

import functools
import ipaddress
import signal as signals
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from wasm_oci.engine import Engine, Program, RunResult, RunSpec, memory
from wasm_oci.engine.acceptor import Acceptor
from wasm_oci.engine.proxy import Outbound, ProxyHost
from wasm_oci.engine.result import Stop
from wasm_oci.engine.serve import CgiServer, Counters, ServeLimits
from wasm_oci.errors import RpcError
from wasm_oci.oci.package import HTTP_PORT, TRIGGERS
from wasm_oci.shim import netns
from wasm_oci.shim.stdio import Attachment

TRIGGER = "WASM_OCI_TRIGGER"
ADDRESS, CONCURRENCY, TIMEOUT, MAX_BODY = (
    "WASM_OCI_HTTP_ADDRESS",
    "WASM_OCI_HTTP_CONCURRENCY",
    "WASM_OCI_HTTP_TIMEOUT",
    "WASM_OCI_HTTP_MAX_BODY",
)
OUTBOUND = "WASM_OCI_HTTP_ALLOW_OUTBOUND"
DEFAULT_ADDRESS = f"0.0.0.0:{HTTP_PORT}"
DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, DEFAULT_MAX_BODY = 4, 30.0, 16 << 20
MAX_CONCURRENCY = 256
DRAIN_SLACK = 1.0
"""Seconds a drain waits past the request timeout for the requests in flight."""
GRACEFUL = frozenset({signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT})


def trigger_of(env: Mapping[str, str], image_trigger: str, proxy: bool = False) -> str:
    """The task's trigger: its environment's word over the image's label; a wasi:http proxy is
    an HTTP function by its world, whatever the label."""
    trigger = env.get(TRIGGER, "http" if proxy else image_trigger) or "command"
    if trigger not in TRIGGERS:
        raise RpcError("INVALID_ARGUMENT", f"{TRIGGER}={trigger!r}: the trigger is one of {', '.join(TRIGGERS)}")
    if proxy and trigger != "http":
        raise RpcError("INVALID_ARGUMENT", f"{TRIGGER}={trigger}: a wasi:http proxy component can only be served (trigger http)")
    return trigger


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    concurrency: int
    timeout: float
    max_body: int
    outbound: frozenset[str] = frozenset()
    """Hosts a wasi:http proxy guest may send requests to (`name` or `name:port`, `*`: any)."""

    def share(self, memory_limit: int | None) -> int | None:
        """Each instance's part of the container's memory limit: all at once stay within it."""
        return memory_limit // self.concurrency if memory_limit else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpSettings:
        """INVALID_ARGUMENT naming the variable for anything that is not what it should be."""
        host, port = _address(env.get(ADDRESS, DEFAULT_ADDRESS))
        return cls(
            host,
            port,
            int(_number(env, CONCURRENCY, DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY)),
            _number(env, TIMEOUT, DEFAULT_TIMEOUT, 0.001, 24 * 3600.0),
            int(_number(env, MAX_BODY, DEFAULT_MAX_BODY, 0, 1 << 40)),
            frozenset(host.strip() for host in env.get(OUTBOUND, "").split(",") if host.strip()),
        )


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    try:
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("the port")
        ipaddress.ip_address(host or "0.0.0.0")
    except ValueError:
        raise RpcError("INVALID_ARGUMENT", f"{ADDRESS}={text!r}: expected IP:PORT, [IPv6]:PORT or :PORT") from None
    return host or "0.0.0.0", int(port)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = env.get(name)
    if text is None:
        return default
    try:
        value = float(text) if name == TIMEOUT else int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise RpcError("INVALID_ARGUMENT", f"{name}={text!r}: expected a number from {low:g} to {high:g}")
    return value


@dataclass(frozen=True)
class HttpPlan:
    """What Create learned for a task that is an HTTP function."""

    settings: HttpSettings
    network: netns.Network
    acceptor: Acceptor
    """The daemon's one accept loop."""

    def describe(self) -> str:
        where = self.network.path or ("a new network namespace" if self.network.new else "the host network")
        return f"{self.settings.host}:{self.settings.port} in {where}"


class HttpFunction:
    """One task's HTTP listener and server, from Create until the task ends."""

    def __init__(
        self,
        engine: Engine,
        program: Program | ProxyHost,
        run_spec: RunSpec,
        plan: HttpPlan,
        attachment: Attachment,
        on_guest_thread: Callable[[], None] | None,
    ) -> None:
        self.plan, self.attachment = plan, attachment
        settings = plan.settings
        spec = replace(run_spec, timeout=settings.timeout, memory_limit=settings.share(run_spec.memory_limit))
        limits = ServeLimits(max_body=settings.max_body, concurrency=settings.concurrency)
        if isinstance(program, ProxyHost):  # the task's own environment, and requests out of its own network
            outbound = Outbound(allow=settings.outbound, connect=functools.partial(netns.connect, plan.network))
            program = ProxyHost(engine, program.component, program.name, outbound, env=run_spec.env)
        listener = netns.listen(plan.network, settings.host, settings.port)
        try:
            self.server = CgiServer(
                (settings.host, settings.port),
                engine,
                program,
                spec,
                limits,
                listener=listener,
                on_guest_thread=on_guest_thread,
                access_log=lambda line: attachment.write_line(0, line),
                error_log=lambda line: attachment.write_line(1, line),
            )
        except BaseException:
            listener.close()
            raise
        self._accepting = self._killed = False
        self._peak = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def counters(self) -> Counters:
        return self.server.counters

    def memory_bytes(self) -> tuple[int, int]:
        """(in RAM now, the most seen at once) of the linear memories of the guests running."""
        running = self.server.executions()
        used = sum(memory.resident(execution.memory) for execution in running)
        self._peak = max(self._peak, used, *(execution.memory.peak for execution in running))
        return used, self._peak

    def limit_memory(self, limit: int | None) -> None:
        """The container's new memory limit, shared out again for the requests to come."""
        self.server.spec = replace(self.server.spec, memory_limit=self.plan.settings.share(limit))

    def start(self) -> None:
        with self._lock:
            self._accepting = True
            self.plan.acceptor.add(self.server)

    def stop(self, signal: int, ended: Callable[[RunResult], None]) -> None:
        """Stop accepting now, then end as `signal` asks (on a thread of its own): `ended` gets
        the result once the connections are gone and the task's stdio let go."""
        self._stop_accepting()
        self._killed = self._killed or signal not in GRACEFUL
        threading.Thread(target=self._end, args=(signal, ended), name="wasm-oci http stop", daemon=True).start()

    def _end(self, signal: int, ended: Callable[[RunResult], None]) -> None:
        started = time.perf_counter()
        if signal in GRACEFUL and self.server.drain(self.plan.settings.timeout + DRAIN_SLACK):
            if self._killed:  # a SIGKILL came during the drain: it reports the end
                return
            result = RunResult(0, "exit", None, time.perf_counter() - started)
        else:  # SIGKILL, or requests still running after their own timeout: stuck in host calls
            result = Stop("killed", signal).result(time.perf_counter() - started)
        self.close()
        ended(result)

    def _stop_accepting(self) -> None:
        with self._lock:
            if self._accepting:
                self.plan.acceptor.remove(self.server)
                self._accepting = False
            self.server.socket.close()

    def close(self) -> None:
        """Let go of everything (once; blocks until the task's stdio is read or DRAIN_TIMEOUT):
        the listener, the connections and guests left, the guest threads, the task's stdio."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_accepting()
        self.server.abort()
        self.server.server_close()
        self.attachment.drain()
