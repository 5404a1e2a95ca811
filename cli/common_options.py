"""Option groups shared by the commands that talk to registries."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from wasm_oci.oci.options import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(func: F) -> F:
    options = [
        click.option("--plain-http", is_flag=True, help="Use HTTP instead of HTTPS (loopback registries)."),
        click.option(
            "--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA bundle for the registry's TLS certificate."
        ),
        click.option("--insecure", is_flag=True, help="Skip TLS certificate verification."),
        click.option("-u", "--username", help="Registry user (default: the Docker config's credentials)."),
        click.option("-p", "--password", help="Registry password or token."),
        click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
        click.option(
            "--registry-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=RegistryOptions.deadline,
            envvar="WASM_OCI_REGISTRY_TIMEOUT",
            show_default=True,
            metavar="SECONDS",
            help="Seconds a whole registry operation may take (every request of a pull or push).",
        ),
        click.option(
            "--offline", is_flag=True, help="Use only the local store: a registry reference must have been pulled (by that name or digest)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_registry_options(
    plain_http: bool,
    ca_file: Path | None,
    insecure: bool,
    username: str | None,
    password: str | None,
    password_stdin: bool,
    registry_timeout: float = RegistryOptions.deadline,
    offline: bool = False,
    **_: Any,
) -> RegistryOptions:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    if password and not username:
        raise click.UsageError("--password needs --username")
    return RegistryOptions(
        plain_http=plain_http,
        ca_file=ca_file,
        insecure_skip_tls_verify=insecure,
        username=username,
        password=password,
        deadline=registry_timeout,
        offline=offline,
    )


def output_format(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format.")(
        func
    )
