"""Serve wasi:http/proxy components: the incoming side of wasi:http, hosted in Python (host.py)."""

from __future__ import annotations

from wasm_oci.engine.component_binary import exports
from wasm_oci.engine.proxy.host import HANDLER, BodyAborted, Limits, Outbound, ProxyHost, Request, Response

__all__ = ["HANDLER", "BodyAborted", "Limits", "Outbound", "ProxyHost", "Request", "Response", "is_proxy"]


def is_proxy(wasm: bytes) -> bool:
    """A component that exports wasi:http's incoming handler and no wasi:cli/run: it can only
    be served, as a proxy (read from its binary: deciding costs no compile)."""
    names = exports(wasm) or ()
    return any(name.startswith(HANDLER) for name in names) and not any(name.startswith("wasi:cli/run@") for name in names)
