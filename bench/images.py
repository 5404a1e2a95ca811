"""The images the containerd benchmarks run, pushed to a local registry.

- the runc baseline: the busybox image of tests/services/images.py, with a Cmd given by the caller;
- the Wasm side: a component pushed with `wasm_oci.oci.distribution.push` in the `image` format, the
  layout the shim runs (with `trigger="http"`, as `wasm-oci push --trigger http` pushes an HTTP function).
"""

from __future__ import annotations

from pathlib import Path

from services.images import PLAIN_HTTP, push_busybox
from wasm_oci.oci import distribution as api
from wasm_oci.oci.package import Trigger

__all__ = ["push_busybox", "push_component"]


def push_component(wasm: Path, host: str, repository: str, trigger: Trigger = "command") -> str:
    """Push a .wasm as an OCI image (the `image` format the shim runs); returns the reference."""
    reference = f"{host}/{repository}:1"
    api.push(str(wasm), reference, PLAIN_HTTP, PLAIN_HTTP, package_options=api.PackageOptions(trigger=trigger))
    return reference
