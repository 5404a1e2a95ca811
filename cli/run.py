"""run / serve: the engine on the command line.

`run` passes the guest's exit status through as its own; a trap, timeout or kill is also
named in one line on stderr (statuses in wasm_oci.engine.result). A timeout or Ctrl-C ends
`run` within _GRACE whatever the guest does: one still in a host call then (a write to an
output nobody reads) is left behind with the process.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from wasm_oci.cli.common_options import build_registry_options, registry_options
from wasm_oci.cli.signing_commands import report_trust, verify_key_option
from wasm_oci.engine.spec import INHERIT, Inherit, Preopen, RunSpec
from wasm_oci.errors import ListenError, NotFound, UsageError

if TYPE_CHECKING:
    from wasm_oci.cli.source import Source
    from wasm_oci.engine import Engine, Program, RunResult

_SIZE = re.compile(r"^(\d+)\s*([kmg]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_GRACE = 1.0  # seconds to wait after a timeout or Ctrl-C for a guest still in a host call


class ByteSize(click.ParamType[int]):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        match = _SIZE.match(str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a size: bytes, or a number with K, M or G (1024-based), e.g. 64M", param, ctx)
        return int(match.group(1)) * _UNITS[match.group(2).lower()]


class KeyValue(click.ParamType[tuple[str, str]]):
    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} must be KEY=VALUE", param, ctx)
        return key, val


class DirMapping(click.ParamType[Preopen]):
    name = "HOST:GUEST[:ro]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Preopen:
        text = str(value)
        read_only = text.endswith(":ro")
        host, sep, guest = (text[:-3] if read_only else text.removesuffix(":rw")).rpartition(":")
        if not sep or not host or not guest:
            self.fail(f"{value!r} must be HOST:GUEST[:ro], e.g. ./data:/data:ro", param, ctx)
        if not Path(host).is_dir():
            raise NotFound(f"--dir {host}: no such directory")
        return Preopen(Path(host), guest, read_only)


F = TypeVar("F", bound=Callable[..., Any])


def guest_options(memory: str | None, timeout: float | None) -> Callable[[F], F]:
    """The run spec options `run` and `serve` share; serve has per-request default limits."""
    limit_note = " (per request)" if timeout is not None else ""

    def decorate(func: F) -> F:
        for option in reversed(
            [
                click.option(
                    "-e",
                    "--env",
                    "envs",
                    type=KeyValue(),
                    multiple=True,
                    help="Environment variable for the guest (repeatable); nothing else of the host's environment is visible.",
                ),
                click.option(
                    "--dir",
                    "dirs",
                    type=DirMapping(),
                    multiple=True,
                    metavar="HOST:GUEST[:ro]",
                    help="Preopen a host directory at GUEST, read-write or with :ro read-only (repeatable); no other file is visible.",
                ),
                click.option(
                    "--memory",
                    type=ByteSize(),
                    default=memory,
                    help=f"Cap on all linear memory, e.g. 64M{limit_note}; growing past it stops the guest (137).",
                    show_default=memory is not None,
                ),
                click.option(
                    "--timeout",
                    type=click.FloatRange(min=0, min_open=True),
                    default=timeout,
                    metavar="SECONDS",
                    help=f"Wall-clock seconds before the guest is stopped{limit_note}.",
                    show_default=timeout is not None,
                ),
                verify_key_option,
            ]
        ):
            func = option(func)
        return registry_options(func)

    return decorate


def _load(source: str, verify_keys: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Engine, Source, Program]:
    from wasm_oci.cli.source import resolve
    from wasm_oci.engine.runner import Engine  # wasmtime: ~40 ms, paid only by run and serve

    src = resolve(source, build_registry_options(**kwargs), verify_keys)
    report_trust(src.trust, verbose=False)
    engine = Engine()
    return engine, src, engine.load(src.wasm, src.digest, src.name)


def _spec(
    src: Source,
    args: tuple[str, ...],
    envs: tuple[tuple[str, str], ...],
    dirs: tuple[Preopen, ...],
    memory: int | None,
    timeout: float | None,
    stdio: Inherit | None,
) -> RunSpec:
    return RunSpec(
        args=[src.name, *args],
        env={**src.env, **dict(envs)},
        stdin=stdio,
        stdout=stdio,
        stderr=stdio,
        preopens=dirs,
        memory_limit=memory,
        timeout=timeout,
    )


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.argument("source")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@guest_options(memory=None, timeout=None)
def run_cmd(
    source: str,
    args: tuple[str, ...],
    envs: tuple[tuple[str, str], ...],
    dirs: tuple[Preopen, ...],
    memory: int | None,
    timeout: float | None,
    verify_keys: tuple[Any, ...],
    **kwargs: Any,
) -> int:
    """Run SOURCE (a .wasm file or a reference) with ARGS; options go before SOURCE (`--` before ARGS that look like them).

    A wasi:cli component or a WASI preview 1 module runs with this terminal's stdio and only
    what the options grant. A reference is pulled (every blob verified, signatures checked per
    the trust policy). The exit status is the guest's; 134 = trap, 124 = timeout, 137 = out of memory.
    """
    from wasm_oci.engine.result import Stop

    if args[:1] == ("--",):
        args = args[1:]
    elif misplaced := next((arg for arg in args if arg.split("=", 1)[0] in _own_options(click.get_current_context())), None):
        raise UsageError(
            f"{misplaced} after SOURCE would go to the guest: put wasm-oci's options before SOURCE, or `--` before the guest's arguments"
        )
    engine, src, program = _load(source, verify_keys, kwargs)
    execution = engine.execution(program, _spec(src, args, envs, dirs, memory, timeout, INHERIT))
    sys.stdout.flush()
    execution.start()  # on a thread, so that Ctrl-C reaches this one while the guest runs
    try:
        result = execution.wait(None if timeout is None else timeout + _GRACE)
        if result is None:
            _leave(Stop("timeout").result(timeout or 0.0))
    except KeyboardInterrupt:
        execution.kill(signal.SIGINT)
        result = execution.wait(_GRACE)
        if result is None:
            _leave(Stop("killed", signal.SIGINT).result(0.0))
    if result.reason != "exit":
        click.echo(f"wasm-oci: {result.reason}: {result.message}", err=True)
    return result.status


def _own_options(ctx: click.Context) -> set[str]:
    return {name for param in ctx.command.params for name in (*param.opts, *param.secondary_opts) if name.startswith("-")} | {
        "-h",
        "--help",
    }


def _leave(result: RunResult) -> NoReturn:
    """Exit with `result` now, the guest's thread still in its host call: os._exit, because
    the interpreter's own exit would run its clean-up under that thread."""
    click.echo(f"wasm-oci: {result.reason}: {result.message}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(result.status)


@click.command("serve")
@click.argument("source")
@click.option(
    "--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT", help="Address to listen on (port 0: any free port)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes serving the socket, each with its own interpreter (default: one per CPU, at most --concurrency); 1: this process only.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Guests running at once, all workers together (default: one per CPU, at least one per worker); more requests wait.",
)
@click.option(
    "--queue-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a request waits for a free guest before a 503.",
)
@click.option("--max-body", type=ByteSize(), default="16M", show_default=True, help="Largest request body (413 past it).")
@click.option(
    "--max-response",
    type=ByteSize(),
    default="64M",
    show_default=True,
    help="Largest response: a CGI guest's stdout or stderr (502 past it, checked while it runs); a wasi:http proxy's streamed body (the connection is cut past it).",
)
@click.option(
    "--allow-outbound",
    "outbound",
    multiple=True,
    metavar="HOST[:PORT]",
    help="A host a wasi:http proxy guest may send requests to (repeatable; '*': any). Default: none, each refused.",
)
@guest_options(memory="128M", timeout=10.0)
def serve_cmd(
    source: str,
    listen: str,
    workers: int | None,
    concurrency: int | None,
    queue_timeout: float,
    max_body: int,
    max_response: int,
    outbound: tuple[str, ...],
    envs: tuple[tuple[str, str], ...],
    dirs: tuple[Preopen, ...],
    memory: int | None,
    timeout: float | None,
    verify_keys: tuple[Any, ...],
    **kwargs: Any,
) -> None:
    """Serve HTTP with SOURCE, a fresh guest instance per request.

    A wasi:http proxy component (exporting wasi:http/incoming-handler, as `wasmtime serve`,
    Spin and wasmCloud run) handles the request itself. Any other guest is a CGI-style handler:
    the request's method, path, query and headers are CGI variables (REQUEST_METHOD,
    PATH_INFO, QUERY_STRING, HTTP_*), its body is stdin; stdout is the response, optionally
    starting with CGI headers (Status:, Content-Type:) and a blank line. A guest that traps,
    fails or times out gives a bare 500 or 504; the details go to stderr. Requests are served
    by --workers processes sharing the socket; SIGTERM or Ctrl-C lets the requests in flight
    finish, then exits 0.
    """
    from wasm_oci.cli.source import resolve
    from wasm_oci.engine import workers as serving
    from wasm_oci.engine.serve import ServeLimits

    host, port = _address(listen)
    cpus = os.cpu_count() or 1
    if workers is not None and concurrency is not None and workers > concurrency:
        raise UsageError(f"--workers {workers} needs --concurrency {workers} or more: each worker runs at least one guest at a time")
    concurrency = concurrency or max(cpus, workers or 1)
    workers = workers or min(cpus, concurrency)
    src = resolve(source, build_registry_options(**kwargs), verify_keys)
    report_trust(src.trust, verbose=False)
    try:  # before any engine or thread exists: the workers fork from here
        listener = serving.listen(host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {listen}: {exc.strerror}") from None
    limits = ServeLimits(max_body=max_body, max_response=max_response, queue_timeout=queue_timeout, concurrency=concurrency)
    logging.basicConfig(format="wasm-oci serve: %(message)s", level=logging.INFO)
    try:
        serving.serve(
            listener,
            serving.Guest(src.wasm, src.digest, src.name, outbound=frozenset(outbound)),
            _spec(src, (), envs, dirs, memory, timeout, None),
            limits,
            workers,
            ready=lambda url: click.echo(f"Serving {source} on {url}", err=True),
        )
    finally:
        listener.close()


def _address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{listen!r} must be HOST:PORT, e.g. 127.0.0.1:8080", param_hint="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)
