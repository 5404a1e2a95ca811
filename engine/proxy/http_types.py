"""wasi:http/types, hosted in Python: requests, responses, bodies and fields as a proxy guest sees them.

One Exchange per request: the Context of streams plus what wasi:http adds: the incoming
request handed to the guest, the response it sets through its `response-outparam`, and the
outgoing requests it may make (outgoing). Semantics follow Wasmtime's host: a
body, a body's stream and a response's outparam are each taken once; the headers read off a
request or response are immutable copies; a body dropped before `finish` is aborted (the
reader sees an error, never a short body that looks whole); content-length, when the guest
sets it, must match what it writes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, cast

from wasmtime.component import Variant

from wasm_oci.engine.proxy.fields import Fields as FieldMap
from wasm_oci.engine.proxy.fields import FieldsFull, HeaderError
from wasm_oci.engine.proxy.streams import Context, InputStream, IoError, OutputStream, Pipe, Pollable, current
from wasm_oci.engine.proxy.values import HostError

FIELDS_BUDGET = 16 * 1024 * 1024
"""Bytes of names and values a guest may put into fields during one request: they live in the
host, outside its memory limit."""
METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"(/[!-~]*|\*)")
"""A request target in origin form (or `*`): visible ASCII only, as hyper's PathAndQuery takes."""
_AUTHORITY = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@\[\]]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")


def code(name: str, payload: Any = None) -> Variant:
    """A wasi:http error-code."""
    return Variant(name, payload)


def method_variant(method: str) -> Variant:
    lower = method.lower()
    return Variant(lower) if lower in METHODS and method in (lower, method.upper()) else Variant("other", method)


def method_name(method: Variant) -> str:
    return str(method.payload) if method.tag == "other" else method.tag.upper()


def scheme_variant(scheme: str) -> Variant:
    lower = scheme.lower()
    return Variant(lower.upper()) if lower in ("http", "https") else Variant("other", scheme)


def scheme_name(scheme: Variant) -> str:
    return str(scheme.payload) if scheme.tag == "other" else scheme.tag.lower()


class Exchange(Context):
    """One request to a proxy guest: its resources, its response, its outgoing requests."""

    def __init__(
        self, body_window: int | None, body_limit: int | None, send: Callable[[Exchange, OutgoingRequest, RequestOptions | None], Any]
    ) -> None:
        """body_window, body_limit: the response body's Pipe (see Pipe); `send` performs an
        outgoing request (or refuses it) and gives its FutureIncomingResponse or an error-code."""
        super().__init__()
        self.body_window, self.body_limit = body_window, body_limit
        self.send = send
        self.response: OutgoingResponse | None = None
        self.response_error: Variant | None = None
        self.responded = threading.Event()
        self.outgoing = 0
        """Outgoing requests the guest made."""
        self.fields_bytes = 0
        """What the guest put into fields (FIELDS_BUDGET)."""
        self.closers: list[Callable[[], None]] = []
        """Called when the guest's run ends (outgoing connections still open)."""

    def charge(self, size: int) -> None:
        self.fields_bytes += max(0, size)
        if self.fields_bytes > FIELDS_BUDGET:
            raise HostError(f"the guest put more than {FIELDS_BUDGET} bytes into fields")

    def respond(self, response: OutgoingResponse | None, error: Variant | None) -> None:
        self.response, self.response_error = response, error
        self.responded.set()

    def close(self) -> None:
        """The guest's run is over: a body it left unfinished is aborted, outgoing requests end."""
        self.stop()
        response = self.response
        if response is not None and response.body is not None:
            response.body.abort("the guest ended before it finished the response body")
        for closer in self.closers:
            closer()
        self.closers.clear()


class IncomingBody:
    def __init__(self, stream: InputStream, trailers: Callable[[], Variant | None]) -> None:
        """`trailers()`: None while the body has not ended, then the future-trailers' answer."""
        self.stream: InputStream | None = stream
        self.pipe = stream.pipe
        self.trailers = trailers


class FutureTrailers:
    def __init__(self, answer: Callable[[], Variant | None]) -> None:
        self.answer = answer
        self.taken = False


class IncomingRequest:
    def __init__(
        self, method: Variant, path: str | None, scheme: Variant | None, authority: str | None, headers: FieldMap, body: IncomingBody
    ) -> None:
        self.method, self.path, self.scheme, self.authority = method, path, scheme, authority
        self.headers = headers
        self.body: IncomingBody | None = body


class IncomingResponse:
    def __init__(self, status: int, headers: FieldMap, body: IncomingBody) -> None:
        self.status, self.headers = status, headers
        self.body: IncomingBody | None = body


class OutgoingBody:
    def __init__(self, pipe: Pipe, expected: int | None, too_long: str) -> None:
        self.pipe = pipe
        self.expected = expected
        """The content-length the guest declared, if it did."""
        self.too_long = too_long
        """The error-code case for a body whose length is not what it declared."""
        self.stream_taken = False
        self.trailers: FieldMap | None = None

    def abort(self, message: str) -> None:
        if not self.pipe.finished:
            self.pipe.finish(IoError(message, code("internal-error", message)))

    def dropped(self) -> None:
        self.abort("the guest dropped the body before it finished it")


class OutgoingResponse:
    def __init__(self, headers: FieldMap) -> None:
        self.status = 200
        self.headers = headers
        self.body: OutgoingBody | None = None


class OutgoingRequest:
    def __init__(self, headers: FieldMap) -> None:
        self.method = Variant("get")
        self.path: str | None = None
        self.scheme: Variant | None = None
        self.authority: str | None = None
        self.headers = headers
        self.body: OutgoingBody | None = None


class RequestOptions:
    def __init__(self) -> None:
        self.timeouts: dict[str, int | None] = {"connect": None, "first-byte": None, "between-bytes": None}


class ResponseOutparam:
    pass


class FutureIncomingResponse:
    """An outgoing request in flight: `complete()` once, from the thread that performs it."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.outcome: Variant | None = None
        self.taken = False
        self.on_drop: Callable[[], None] = lambda: None
        """Stops the request in flight (set by whoever performs it)."""

    def dropped(self) -> None:
        self.on_drop()

    def complete(self, outcome: Variant) -> None:
        """`ok(IncomingResponse)` or `err(error-code)`."""
        self.outcome = outcome
        self.exchange.notify()


def _exchange() -> Exchange:
    context = current()
    if not isinstance(context, Exchange):
        raise HostError("not a wasi:http request")
    return context


def _change(rep: int, action: Callable[[FieldMap], None]) -> Variant:
    """A fields operation's result<_, header-error>, its growth charged to the request."""
    exchange = _exchange()
    fields = exchange.get(rep, FieldMap)
    before = fields.size
    try:
        action(fields)
    except HeaderError as exc:
        return Variant("err", Variant(exc.case))
    except FieldsFull as exc:
        raise HostError(str(exc)) from None
    exchange.charge(fields.size - before)
    return Variant("ok")


def _frozen(fields: FieldMap) -> int:
    """A handle to immutable fields (a request's or response's headers as the guest reads them):
    these very ones once nothing can change them any more, else a copy."""
    if fields.mutable:
        fields = fields.clone()
        fields.mutable = False
    return _exchange().add(fields)


def _adopt(rep: int) -> FieldMap:
    """Fields the guest hands over to a request or response: they no longer change."""
    fields = _exchange().take(rep, FieldMap)
    fields.mutable = False
    return fields


# fields


def _from_list(entries: list[tuple[str, bytes]]) -> Variant:
    try:
        made = FieldMap(entries)
    except HeaderError as exc:
        return Variant("err", Variant(exc.case))
    except FieldsFull as exc:
        raise HostError(str(exc)) from None
    exchange = _exchange()
    exchange.charge(made.size)
    return Variant("ok", exchange.add(made))


def _fields(rep: int) -> FieldMap:
    return _exchange().get(rep, FieldMap)


def _clone(rep: int) -> int:
    exchange = _exchange()
    copy = _fields(rep).clone()
    exchange.charge(copy.size)
    return exchange.add(copy)


# incoming-request, incoming-response, incoming-body, future-trailers


def _consume(rep: int, kind: type[IncomingRequest] | type[IncomingResponse]) -> Variant:
    exchange = _exchange()
    message = exchange.get(rep, kind)
    body, message.body = message.body, None
    if body is None:
        return Variant("err")
    return Variant("ok", exchange.add(body))


def _body_stream(rep: int) -> Variant:
    exchange = _exchange()
    body = exchange.get(rep, IncomingBody)
    stream, body.stream = body.stream, None
    if stream is None:
        return Variant("err")
    return Variant("ok", exchange.add(stream))


def _body_finish(rep: int) -> int:
    exchange = _exchange()
    body = exchange.take(rep, IncomingBody)
    if not body.pipe.finished:  # the rest of the body goes unread: its writer stops, the trailers are due now
        body.pipe.abandon()
        body.pipe.finish()
    return exchange.add(FutureTrailers(body.trailers))


def _trailers_get(rep: int) -> Variant | None:
    future = _exchange().get(rep, FutureTrailers)
    if future.taken:
        return Variant("err")
    answer = future.answer()
    if answer is None:
        return None
    future.taken = True
    return Variant("ok", answer)


def _trailers_subscribe(rep: int) -> int:
    exchange = _exchange()
    future = exchange.get(rep, FutureTrailers)
    return exchange.add(Pollable(lambda: future.taken or future.answer() is not None))


def body_trailers(pipe: Pipe, trailers: Callable[[], FieldMap | None] = lambda: None) -> Callable[[], Variant | None]:
    """The future-trailers answer for an incoming body read from `pipe`: ready at its end."""

    def answer() -> Variant | None:
        if not pipe.finished:
            return None
        if pipe.error is not None:
            return Variant("err", pipe.error.http_code or code("internal-error", pipe.error.message))
        found = trailers()
        return Variant("ok", None if found is None else _frozen(found))

    return answer


# outgoing-response, outgoing-request, outgoing-body


def _declared_length(headers: FieldMap) -> int | None:
    values = headers.get("content-length")
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])


def _response_body(rep: int) -> Variant:
    exchange = _exchange()
    response = exchange.get(rep, OutgoingResponse)
    if response.body is not None:
        return Variant("err")
    pipe = Pipe(exchange, exchange.body_window, exchange.body_limit)
    response.body = OutgoingBody(pipe, _declared_length(response.headers), "HTTP-response-body-size")
    return Variant("ok", exchange.add(response.body))


def _request_body(rep: int) -> Variant:
    exchange = _exchange()
    request = exchange.get(rep, OutgoingRequest)
    if request.body is not None:
        return Variant("err")
    pipe = Pipe(exchange, OUTGOING_WINDOW)
    request.body = OutgoingBody(pipe, _declared_length(request.headers), "HTTP-request-body-size")
    return Variant("ok", exchange.add(request.body))


OUTGOING_WINDOW = 256 * 1024
"""Bytes of an outgoing request's body held while the connection sends them."""


def _body_write(rep: int) -> Variant:
    exchange = _exchange()
    body = exchange.get(rep, OutgoingBody)
    if body.stream_taken:
        return Variant("err")
    body.stream_taken = True
    return Variant("ok", exchange.add(OutputStream(body.pipe)))


def _body_finish_outgoing(rep: int, trailers: int | None) -> Variant:
    exchange = _exchange()
    body = exchange.take(rep, OutgoingBody)
    if trailers is not None:
        body.trailers = _adopt(trailers)
    written = body.pipe.total
    if body.expected is not None and written != body.expected:
        body.abort(f"the body is {written} bytes, its content-length {body.expected}")
        return Variant("err", code(body.too_long, written))
    body.pipe.finish()
    return Variant("ok")


def _set_status(rep: int, status: int) -> Variant:
    response = _exchange().get(rep, OutgoingResponse)
    if not 100 <= status <= 999:
        return Variant("err")
    response.status = status
    return Variant("ok")


def _setter(check: Callable[[Any], bool], attribute: str) -> Callable[[int, Any], Variant]:
    def set_value(rep: int, value: Any) -> Variant:
        request = _exchange().get(rep, OutgoingRequest)
        if value is not None and not check(value):
            return Variant("err")
        setattr(request, attribute, value)
        return Variant("ok")

    return set_value


def _valid_method(method: Variant) -> bool:
    return method.tag != "other" or bool(_TOKEN.fullmatch(str(method.payload)))


def _valid_scheme(scheme: Variant) -> bool:
    return scheme.tag != "other" or bool(_SCHEME.fullmatch(str(scheme.payload)))


def _request_options(rep: int) -> RequestOptions:
    return _exchange().get(rep, RequestOptions)


def _option_setter(name: str) -> Callable[[int, int | None], Variant]:
    def set_timeout(rep: int, value: int | None) -> Variant:
        _request_options(rep).timeouts[name] = value
        return Variant("ok")

    return set_timeout


def _outparam_set(rep: int, outcome: Variant) -> None:
    exchange = _exchange()
    exchange.take(rep, ResponseOutparam)
    if outcome.tag == "ok":
        exchange.respond(exchange.take(cast(int, outcome.payload), OutgoingResponse), None)
    else:
        exchange.respond(None, outcome.payload)


# future-incoming-response, the outgoing handler


def _future_get(rep: int) -> Variant | None:
    exchange = _exchange()
    future = exchange.get(rep, FutureIncomingResponse)
    if future.taken:
        return Variant("err")
    outcome = future.outcome
    if outcome is None:
        return None
    future.taken = True
    if outcome.tag == "ok":
        return Variant("ok", Variant("ok", exchange.add(outcome.payload)))
    return Variant("ok", outcome)


def _future_subscribe(rep: int) -> int:
    exchange = _exchange()
    future = exchange.get(rep, FutureIncomingResponse)
    return exchange.add(Pollable(lambda: future.outcome is not None or future.taken))


def _http_error_code(rep: int) -> Variant | None:
    return _exchange().get(rep, IoError).http_code


def _handle(rep: int, options: int | None) -> Variant:
    exchange = _exchange()
    request = exchange.take(rep, OutgoingRequest)
    settings = None if options is None else exchange.take(options, RequestOptions)
    sent = exchange.send(exchange, request, settings)
    if isinstance(sent, Variant):
        return Variant("err", sent)
    return Variant("ok", exchange.add(sent))


def _incoming_request(rep: int) -> IncomingRequest:
    return _exchange().get(rep, IncomingRequest)


def _incoming_response(rep: int) -> IncomingResponse:
    return _exchange().get(rep, IncomingResponse)


def _outgoing_request(rep: int) -> OutgoingRequest:
    return _exchange().get(rep, OutgoingRequest)


FUNCTIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "wasi:http/types": {
        "[constructor]fields": lambda: _exchange().add(FieldMap()),
        "[static]fields.from-list": _from_list,
        "[method]fields.get": lambda rep, name: _fields(rep).get(name),
        "[method]fields.has": lambda rep, name: _fields(rep).has(name),
        "[method]fields.set": lambda rep, name, values: _change(rep, lambda fields: fields.set(name, values)),
        "[method]fields.delete": lambda rep, name: _change(rep, lambda fields: fields.delete(name)),
        "[method]fields.append": lambda rep, name, value: _change(rep, lambda fields: fields.append(name, value)),
        "[method]fields.entries": lambda rep: list(_fields(rep).entries),
        "[method]fields.clone": _clone,
        "[method]incoming-request.method": lambda rep: _incoming_request(rep).method,
        "[method]incoming-request.path-with-query": lambda rep: _incoming_request(rep).path,
        "[method]incoming-request.scheme": lambda rep: _incoming_request(rep).scheme,
        "[method]incoming-request.authority": lambda rep: _incoming_request(rep).authority,
        "[method]incoming-request.headers": lambda rep: _frozen(_incoming_request(rep).headers),
        "[method]incoming-request.consume": lambda rep: _consume(rep, IncomingRequest),
        "[constructor]outgoing-request": lambda headers: _exchange().add(OutgoingRequest(_adopt(headers))),
        "[method]outgoing-request.body": _request_body,
        "[method]outgoing-request.method": lambda rep: _outgoing_request(rep).method,
        "[method]outgoing-request.set-method": _setter(_valid_method, "method"),
        "[method]outgoing-request.path-with-query": lambda rep: _outgoing_request(rep).path,
        "[method]outgoing-request.set-path-with-query": _setter(lambda path: bool(_PATH.fullmatch(path)), "path"),
        "[method]outgoing-request.scheme": lambda rep: _outgoing_request(rep).scheme,
        "[method]outgoing-request.set-scheme": _setter(_valid_scheme, "scheme"),
        "[method]outgoing-request.authority": lambda rep: _outgoing_request(rep).authority,
        "[method]outgoing-request.set-authority": _setter(lambda authority: bool(_AUTHORITY.fullmatch(authority)), "authority"),
        "[method]outgoing-request.headers": lambda rep: _frozen(_outgoing_request(rep).headers),
        "[constructor]request-options": lambda: _exchange().add(RequestOptions()),
        "[method]request-options.connect-timeout": lambda rep: _request_options(rep).timeouts["connect"],
        "[method]request-options.set-connect-timeout": _option_setter("connect"),
        "[method]request-options.first-byte-timeout": lambda rep: _request_options(rep).timeouts["first-byte"],
        "[method]request-options.set-first-byte-timeout": _option_setter("first-byte"),
        "[method]request-options.between-bytes-timeout": lambda rep: _request_options(rep).timeouts["between-bytes"],
        "[method]request-options.set-between-bytes-timeout": _option_setter("between-bytes"),
        "[static]response-outparam.set": _outparam_set,
        "[method]incoming-response.status": lambda rep: _incoming_response(rep).status,
        "[method]incoming-response.headers": lambda rep: _frozen(_incoming_response(rep).headers),
        "[method]incoming-response.consume": lambda rep: _consume(rep, IncomingResponse),
        "[method]incoming-body.stream": _body_stream,
        "[static]incoming-body.finish": _body_finish,
        "[method]future-trailers.subscribe": _trailers_subscribe,
        "[method]future-trailers.get": _trailers_get,
        "[constructor]outgoing-response": lambda headers: _exchange().add(OutgoingResponse(_adopt(headers))),
        "[method]outgoing-response.status-code": lambda rep: _exchange().get(rep, OutgoingResponse).status,
        "[method]outgoing-response.set-status-code": _set_status,
        "[method]outgoing-response.headers": lambda rep: _frozen(_exchange().get(rep, OutgoingResponse).headers),
        "[method]outgoing-response.body": _response_body,
        "[method]outgoing-body.write": _body_write,
        "[static]outgoing-body.finish": _body_finish_outgoing,
        "[method]future-incoming-response.subscribe": _future_subscribe,
        "[method]future-incoming-response.get": _future_get,
        "http-error-code": _http_error_code,
    },
    "wasi:http/outgoing-handler": {"handle": _handle},
}
"""Each interface's functions by name (the interface named without its version)."""


def incoming_request(
    exchange: Exchange,
    method: str,
    path: str | None,
    scheme: str | None,
    authority: str | None,
    headers: FieldMap,
    body: InputStream,
    trailers: Callable[[], FieldMap | None] = lambda: None,
) -> tuple[int, int]:
    """The reps of the request and the response-outparam to hand `handle`."""
    request = IncomingRequest(
        method_variant(method),
        path,
        None if scheme is None else scheme_variant(scheme),
        authority,
        headers,
        IncomingBody(body, body_trailers(body.pipe, trailers)),
    )
    return exchange.add(request), exchange.add(ResponseOutparam())
