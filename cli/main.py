"""Entry point: the command group and the mapping of project errors to one line and an exit code."""

from __future__ import annotations

import importlib
import sys

import click

from wasm_oci import __version__
from wasm_oci.cli.output import printable
from wasm_oci.errors import WasmOciError

COMMANDS = {
    "package": ("distribution_commands", "package_cmd"),
    "push": ("distribution_commands", "push_cmd"),
    "pull": ("distribution_commands", "pull_cmd"),
    "inspect": ("distribution_commands", "inspect_cmd"),
    "copy": ("distribution_commands", "copy_cmd"),
    "tags": ("registry_commands", "tags_cmd"),
    "login": ("distribution_commands", "login_cmd"),
    "logout": ("distribution_commands", "logout_cmd"),
    "keygen": ("signing_commands", "keygen_cmd"),
    "sign": ("signing_commands", "sign_cmd"),
    "verify": ("signing_commands", "verify_cmd"),
    "run": ("run", "run_cmd"),
    "serve": ("run", "serve_cmd"),
    "images": ("store", "images_cmd"),
    "tag": ("store", "tag_cmd"),
    "rm": ("store", "rm_cmd"),
    "prune": ("store", "prune_cmd"),
}
"""Command name -> (module under wasm_oci.cli, attribute)."""


class LazyGroup(click.Group):
    """Imports a command's module when that command is looked up (to run it, or to list it in
    --help), not at start-up: every invocation pays for one command's imports, not all of them
    (`push` does not load the engine, `run` not the signing code)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        command: click.Command = getattr(importlib.import_module(f"wasm_oci.cli.{found[0]}"), found[1])
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wasm-oci")
def cli() -> None:
    """Package, distribute and run WebAssembly components as OCI artifacts."""


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
