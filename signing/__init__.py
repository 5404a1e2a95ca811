"""Cosign-compatible signatures for Wasm artifacts: keys, both signature layouts, verification and trust policy.

`wasm_oci.signing.operations` is the entry point; `wasm_oci.signing.trust.check` is the one call that
pull, run and the shim make before they write or start anything.
"""
