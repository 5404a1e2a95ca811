"""oras-py's `Registry` operations (`get_tags`, `delete_tag`, `get_manifest`, ...) on this project's
request layer: Basic and Bearer auth, credentials to their own origin only, the CA and TLS settings,
the operation's deadline, size caps and the mapping of failures to project errors.

    repo = OrasRepository(RegistryReference("registry.example", "acme/hello"), options)
    repo.get_tags("registry.example/acme/hello")

Kept apart from `remote`: oras-py imports jsonschema and requests (~150 ms), which no command
of the CLI needs; only what asks for oras-py's API pays for it.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator
from typing import Any

import oras.provider

from wasm_oci.errors import RegistryError
from wasm_oci.oci import documents
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import RegistryReference
from wasm_oci.oci.remote import RemoteRepository
from wasm_oci.oci.transport import Response, Transport


class OrasResponse:
    """What oras-py reads of a `requests.Response`, over one of the transport's responses:
    bodies read whole are capped at documents.MAX_DOCUMENT."""

    def __init__(self, response: Response, transport: Transport) -> None:
        self._response, self._transport = response, transport
        self.status_code = response.status_code
        self.reason = response.reason
        self.headers = response.headers
        self.url = response.url
        self.links = response.links
        self.request = self  # oras-py names `response.request.url` in its messages
        self._content: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def content(self) -> bytes:
        if self._content is None:
            with self._response:
                self._content = self._transport.read(self._response, documents.MAX_DOCUMENT, f"response of {self.url[:120]}")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        with self._response:
            yield from self._transport.chunks(self._response)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RegistryError(f"{self.url[:120]} answered HTTP {self.status_code} {str(self.reason)[:80]}")

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> OrasResponse:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class OrasRepository(RemoteRepository, oras.provider.Registry):  # type: ignore[misc]  # oras-py ships no type information
    def __init__(self, ref: RegistryReference, options: RegistryOptions | None = None) -> None:
        settings = options or RegistryOptions()
        oras.provider.Registry.__init__(self, hostname=ref.registry, insecure=settings.plain_http, tls_verify=settings.verify)
        RemoteRepository.__init__(self, ref, settings)

    def do_request(  # oras-py sends every request through this, and reads a requests-like response
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,  # bodies always stream
    ) -> OrasResponse:
        return OrasResponse(self.request(url, method, data, headers, json), self.transport)
