"""CGI/1.1 (RFC 3875) between an HTTP request and a wasi:cli guest: the request as environment
variables, the guest's stdout as the response.

wasmtime's C API cannot serve `wasi:http/incoming-handler`, and CGI needs nothing from the
guest but stdio and environment: any wasi:cli command (or preview 1 module) is a handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from wasm_oci import __version__

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# A header line as RFC 9110 has it: a token, a colon, a value of visible characters, spaces
# and tabs; a CR, NUL or other control anywhere makes the block no header block at all.
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*")
# No 1xx: the client would take it for an interim response and read the body as the next one.
_STATUS = re.compile(r"([2-5][0-9][0-9])(?:[ \t]+(.*))?")
# The header names CGI maps to HTTP_* (RFC 3875 4.1.18): another character, '_' above all,
# could make a name pose as another header once '-' becomes '_'.
_MAPPED_NAME = re.compile(r"[A-Za-z0-9-]+")
# Never forwarded from the guest: the server frames the response itself.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer", "proxy-connection"}


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    """The request target as sent: path and optional ?query."""
    headers: list[tuple[str, str]]
    body_length: int
    client: tuple[str, int]
    server: tuple[str, int]
    protocol: str = "HTTP/1.1"


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class MalformedResponse(Exception):
    """Guest output that starts a header block but breaks CGI's rules (for example a bad Status)."""


def environ(request: Request) -> dict[str, str]:
    path, _, query = request.target.partition("?")
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": f"wasm-oci/{__version__}",
        "SERVER_PROTOCOL": request.protocol,
        "SERVER_NAME": request.server[0],
        "SERVER_PORT": str(request.server[1]),
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, errors="replace"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": request.client[0],
        "REMOTE_PORT": str(request.client[1]),
    }
    if request.body_length:
        env["CONTENT_LENGTH"] = str(request.body_length)
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == "content-type":
            env["CONTENT_TYPE"] = value
        # Content-Length has its variable; Proxy would become HTTP_PROXY (httpoxy). A client
        # sets no variable but these HTTP_* and CONTENT_TYPE.
        elif lowered not in ("content-length", "proxy") and _MAPPED_NAME.fullmatch(name):
            key = "HTTP_" + name.upper().replace("-", "_")
            env[key] = f"{env[key]}, {value}" if key in env else value
    return env


def parse_response(output: bytes) -> Response:
    """Split an optional CGI header block (Status, Content-Type, Location, others) from the body.

    Output that does not start with header lines and a blank line is all body, served as 200.
    """
    block, body = _split(output)
    if block is None:
        return Response(200, "OK", [("Content-Type", DEFAULT_CONTENT_TYPE)], output)
    status, reason, headers = 200, "OK", []
    for line in block:
        name, _, value = line.decode("latin-1").partition(":")
        value = value.strip(" \t")
        if name.lower() == "status":
            match = _STATUS.fullmatch(value)
            if not match:
                raise MalformedResponse(f"bad CGI Status header {value!r}")
            status, reason = int(match.group(1)), match.group(2) or ""
        elif name.lower() not in HOP_BY_HOP:
            headers.append((name, value))
    names = {name.lower() for name, _ in headers}
    if "location" in names and not any(line.lower().startswith(b"status:") for line in block):
        status, reason = 302, "Found"
    if "content-type" not in names:
        headers.append(("Content-Type", DEFAULT_CONTENT_TYPE))
    return Response(status, reason, headers, body)


def _split(output: bytes) -> tuple[list[bytes] | None, bytes]:
    ends = [(at, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (at := output.find(sep)) >= 0]
    if not ends:
        return None, output
    end, width = min(ends)
    lines = [line.rstrip(b"\r") for line in output[:end].split(b"\n")]
    if not all(_HEADER_LINE.fullmatch(line) for line in lines):
        return None, output
    return lines, output[end + width :]
