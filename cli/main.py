"""Entry point: the command group and the mapping of project errors to one line and an exit code."""

from __future__ import annotations

import sys

import click

from wasm_oci import __version__
from wasm_oci.cli.distribution_commands import copy_cmd, inspect_cmd, login_cmd, logout_cmd, package_cmd, pull_cmd, push_cmd
from wasm_oci.cli.output import printable
from wasm_oci.cli.run import run_cmd, serve_cmd
from wasm_oci.cli.signing_commands import keygen_cmd, sign_cmd, verify_cmd
from wasm_oci.cli.store import images_cmd, prune_cmd, rm_cmd, tag_cmd
from wasm_oci.errors import WasmOciError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wasm-oci")
def cli() -> None:
    """Package, distribute and run WebAssembly components as OCI artifacts."""


for command in (
    package_cmd,
    push_cmd,
    pull_cmd,
    inspect_cmd,
    copy_cmd,
    login_cmd,
    logout_cmd,
    keygen_cmd,
    sign_cmd,
    verify_cmd,
    run_cmd,
    serve_cmd,
    images_cmd,
    tag_cmd,
    rm_cmd,
    prune_cmd,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    try:
        status = cli.main(args=argv, prog_name="wasm-oci", standalone_mode=False)
    except WasmOciError as exc:
        click.echo(f"wasm-oci: error: {printable(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("wasm-oci: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line too, with where to look
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"wasm-oci: error: {printable(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"wasm-oci: error: {printable(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("wasm-oci: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    sys.exit(status if isinstance(status, int) else 0)
