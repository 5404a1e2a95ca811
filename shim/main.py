"""`containerd-shim-wasm-oci-v1`: the binary containerd runs for runtime `io.containerd.wasm-oci.v1`.

`start` and `delete` are short-lived commands containerd waits for; they import only the
standard library and this package's small modules (tests/test_shim_imports.py holds them to
that). `serve` is the long-lived daemon `start` spawns.
"""

from __future__ import annotations

import os
import sys

from wasm_oci import __version__
from wasm_oci.errors import UsageError, WasmOciError
from wasm_oci.shim.flags import parse

NAME = "containerd-shim-wasm-oci-v1"
STDIN_HEX = "WASM_OCI_SHIM_STDIN_HEX"
"""Set by the sh launcher when it read `start`'s stdin (the runtime options) before handing
over: stdin then holds those bytes in hex, as od(1) writes them (sh cannot hold binary)."""


def _stdin() -> bytes:
    data = b""
    while chunk := os.read(0, 65536):
        data += chunk
    if os.environ.pop(STDIN_HEX, ""):  # not inherited by the daemon
        return bytes.fromhex(data.decode("ascii"))
    return data


def main(argv: list[str] | None = None) -> None:
    try:
        flags = parse(sys.argv[1:] if argv is None else argv)
        if flags.version:
            sys.stdout.write(f"{NAME}:\n  Version: {__version__}\n  Runtime: io.containerd.wasm-oci.v1\n")
        elif flags.action == "start":
            from wasm_oci.shim.start import start

            sys.stdout.write(start(flags, _stdin()))
        elif flags.action == "delete":
            from wasm_oci.shim.delete import delete

            sys.stdout.buffer.write(delete(flags))
        elif flags.action == "serve":
            from wasm_oci.shim.daemon import serve

            serve(flags)
        else:
            raise UsageError("run by containerd: -namespace NS -address SOCKET -id ID start|delete")
    except UsageError as exc:
        sys.stderr.write(f"{NAME}: {exc}\n")
        sys.exit(2)
    except WasmOciError as exc:
        sys.stderr.write(f"{NAME}: {exc}\n")
        sys.exit(exc.exit_code)
