"""Serve wasi:http/proxy components: the incoming side of wasi:http, hosted in Python (host.py)."""

from __future__ import annotations

from wasm_oci.engine.proxy.host import HANDLER, BodyAborted, Limits, Outbound, ProxyHost, Request, Response

__all__ = ["HANDLER", "BodyAborted", "Limits", "Outbound", "ProxyHost", "Request", "Response"]
