"""`python -m wasm_oci.shim`: the shim binary, also how `start` runs the daemon."""

from wasm_oci.shim.main import main

main()
