"""oras-py's `Registry` operations (`get_tags`, `delete_tag`, `get_manifest`, ...) on this project's
request layer: Basic and Bearer auth, credentials to their own origin only, the CA and TLS settings,
the operation's deadline, size caps and the mapping of failures to project errors.

    repo = OrasRepository(RegistryReference("registry.example", "acme/hello"), options)
    repo.tags()   # oras-py's `get_tags`, every page of it, bounded (`repository_tags` for a reference string)

Kept apart from `remote`: oras-py imports jsonschema and requests (~150 ms), which only `tags`
of the CLI needs; only what asks for oras-py's API pays for it.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import oras.container
import oras.provider

from wasm_oci.errors import MalformedContent, NotFound, RegistryError, UsageError
from wasm_oci.oci import documents
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import RegistryReference, is_tag, parse
from wasm_oci.oci.remote import RemoteRepository, api_host
from wasm_oci.oci.transport import Response, Transport

MAX_TAG_PAGES = 1000
"""Pages one tag listing may follow (each up to documents.MAX_DOCUMENT bytes): oras-py's loop has no end of its own."""
MAX_TAGS = 100_000
"""Tags one listing may return, all pages together (ample for 1000 pages of the usual 100)."""


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

    def _check_200_response(self, response: OrasResponse) -> None:
        """oras-py raises ValueError for any other status: here it is the project's error, as for our own requests."""
        where = urlsplit(response.url).path
        self._check(response._response, (200, 201, 202), where.partition(f"/v2/{self.repository}/")[2] or where[:120])

    def tags(self) -> list[str]:
        """The repository's tags in the registry's order: oras-py's `get_tags`, following `Link` pages,
        within this repository's one deadline (its transport's, `RegistryOptions.deadline`)."""
        container = oras.container.Container(self.repository, registry=api_host(self.registry))
        container.registry = api_host(self.registry)  # whatever oras-py's parser made of a dotted first component
        container.namespace, _, container.repository = self.repository.rpartition("/")
        try:
            found: list[str] = self.get_tags(container)
        except NotFound:
            raise NotFound(f"repository {self.registry}/{self.repository} not found") from None
        return found

    def _do_paginated_request(self, url: str, callable: Callable[[OrasResponse], bool]) -> None:  # `callable`: oras-py passes it by name
        """oras-py's page loop (`while True`) with each page checked before its callback reads it:
        a JSON tag list of valid tags, MAX_TAGS in all, and a `next` page on this origin, not seen
        before, at most MAX_TAG_PAGES of them."""
        root = "{0.scheme}://{0.netloc}".format(urlsplit(url))  # what oras-py resolves `next` against
        seen, pages, total = {url}, 0, 0
        what = f"tag list of {self.registry}/{self.repository}"

        def checked(response: OrasResponse) -> bool:
            nonlocal pages, total
            pages += 1
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type and media_type != "application/json" and not media_type.endswith("+json"):
                response.close()
                raise MalformedContent(f"{what} came as {media_type[:80]!r}, not JSON")
            listed = documents.strings(documents.load(response.content, what), "tags", what)
            total += len(listed)
            if total > MAX_TAGS:
                raise MalformedContent(f"{what} runs past {MAX_TAGS} tags")
            bad = next((tag for tag in listed if not is_tag(tag)), None)
            if bad is not None:
                raise MalformedContent(f"{what} lists {bad[:130]!r}, which is not a tag")
            if not callable(response):
                return False
            following = response.links.get("next", {}).get("url")
            if following:
                following = urljoin(root, following)
                if following in seen:
                    raise RegistryError(f"{what} pages back to {following[:120]}")
                if not self._own(following):
                    raise RegistryError(f"{what} continues on another host ({following[:120]})")
                if pages == MAX_TAG_PAGES:
                    raise RegistryError(f"{what} runs past {MAX_TAG_PAGES} pages")
                seen.add(following)
            return True

        super()._do_paginated_request(url, checked)


def repository_tags(ref_text: str, options: RegistryOptions | None = None) -> list[str]:
    """The tags of the registry repository `ref_text` names (HOST[:PORT]/REPO, no tag or digest)."""
    ref = parse(ref_text)
    if not isinstance(ref, RegistryReference):
        raise UsageError(f"{ref_text[:200]!r} is not a registry repository: expected HOST[:PORT]/REPO")
    if ref.tag or ref.digest:
        raise UsageError(f"{ref_text[:200]!r} names a tag or digest: expected a repository, HOST[:PORT]/REPO")
    if options is not None and options.offline:
        raise UsageError(f"{ref} is on a registry, and --offline forbids contacting one")
    repo = OrasRepository(ref, options)
    try:
        return repo.tags()
    finally:
        repo.transport.close()
