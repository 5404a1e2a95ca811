"""A repository on an OCI distribution registry, as a content store.

`RemoteRepository` speaks the distribution API over `transport.Transport` (the deadline,
redirects, size caps and the mapping of transport failures are the transport's); here:
  * `do_request`: answers `Basic` and `Bearer` challenges, sends credentials only to the
    registry's own origin, and maps registry error codes to this project's exceptions;
  * blob transfer: uploads stream from an iterator with a known length and downloads hand raw
    chunks to the caller's digest check;
  * manifests are handled as raw bytes, so digests are of exactly what the registry serves;
  * referrers pages are followed on the same origin only, each once, up to MAX_PAGES.
oras-py's own operations (`get_tags`, `delete_tag`, ...) run through the same request layer on
an `oras_compat.OrasRepository`; oras-py is imported there only, not on push's or pull's path.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urljoin

from wasm_oci.errors import (
    AuthenticationError,
    DigestMismatch,
    MalformedContent,
    NotFound,
    RegistryError,
    WasmOciError,
)
from wasm_oci.oci import digest as digests
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.auth import Authenticator, Credentials, DockerConfig
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import RegistryReference
from wasm_oci.oci.target import checked, fetch_bytes
from wasm_oci.oci.transport import Body, Response, Transport, origin

_ACCEPT = ", ".join([mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST])
_NOT_FOUND_CODES = {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"}
MAX_ERROR_BODY = 64 << 10
MAX_PAGES = 64
"""Referrers pages one listing may follow (each up to documents.MAX_ENTRIES entries)."""


def api_host(registry: str) -> str:
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


class RemoteRepository:
    def __init__(self, ref: RegistryReference, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self.prefix = "http" if self.options.plain_http else "https"
        self.registry = ref.registry
        self.repository = ref.repository
        self.root = f"{self.prefix}://{api_host(ref.registry)}"
        self.base = f"{self.root}/v2/{ref.repository}"
        creds = (
            Credentials(self.options.username, self.options.password or "")
            if self.options.username
            else DockerConfig().credentials(ref.registry)
        )
        self.transport = Transport(ref.registry, self.options.verify, self.options.timeout, self.options.deadline)
        self.authenticator = Authenticator(ref.registry, self.transport, creds, secure=not self.options.plain_http)

    # -- transport -----------------------------------------------------------------------------
    def _own(self, url: str) -> bool:
        """Whether `url` is on the registry's own origin: the only one its credentials go to."""
        return origin(url) == origin(self.root)

    def request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
    ) -> Response:
        """Send one request, answering an auth challenge once; idempotent reads retry briefly on 5xx/429.
        The body is never read here."""
        scope = f"repository:{self.repository}:" + ("pull" if method in ("GET", "HEAD") else "pull,push")
        attempts = 3 if method in ("GET", "HEAD") else 1
        own = self._own(url)
        if json is not None:
            data, headers = _json_body(json), {"Content-Type": "application/json", **(headers or {})}
        for attempt in range(attempts):
            sent = {**(headers or {}), **(self.authenticator.header_for(scope) if own else {})}
            response = self.transport.request(method, url, sent, data)
            if response.status_code == 401 and own:
                response.close()
                if isinstance(data, Body) or hasattr(data, "read"):  # streamed once: it cannot be sent again
                    raise AuthenticationError(f"{self.registry} refused the credentials for {self.repository}")
                sent.update(self.authenticator.answer(response, scope, sent.get("Authorization")))
                response = self.transport.request(method, url, sent, data)
                if response.status_code == 401:
                    raise AuthenticationError(
                        f"{self.registry} refused the credentials for {self.repository}: {_describe(response, self._errors(response))}"
                    )
            if response.status_code == 403:
                raise AuthenticationError(
                    f"{self.registry} denied access to {self.repository}: {_describe(response, self._errors(response))}"
                )
            if response.status_code in (429, 500, 502, 503, 504) and attempt + 1 < attempts:
                response.close()
                time.sleep(min(0.2 * (attempt + 1), max(0.0, self.transport.cutoff.remaining())))
                continue
            return response
        return response

    def _errors(self, response: Response) -> list[dict[str, Any]]:
        """The distribution spec's error list, from at most MAX_ERROR_BODY bytes of the body."""
        try:
            doc = documents.load(self.transport.read(response, MAX_ERROR_BODY, "error response"), "error response")
        except MalformedContent:
            return []
        errors = doc.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def _check(self, response: Response, ok: tuple[int, ...], what: str) -> Response:
        if response.status_code in ok:
            return response
        errors = self._errors(response)
        codes = {e.get("code") for e in errors}
        if response.status_code == 404 or codes & _NOT_FOUND_CODES:
            raise NotFound(f"{what}: not found in {self.registry}/{self.repository}")
        if codes & {"DIGEST_INVALID", "SIZE_INVALID"}:
            raise DigestMismatch(f"{what}: rejected by {self.registry}: {_describe(response, errors)}")
        raise RegistryError(f"{what}: {self.registry} answered {_describe(response, errors)}")

    # -- Target --------------------------------------------------------------------------------
    def resolve(self, reference: str) -> Descriptor:
        """A tag or digest in this repository. HEAD's headers, checked like a descriptor;
        without all of them, GET the manifest (capped at documents.MAX_DOCUMENT) and describe
        what was served."""
        pinned = reference if reference.startswith(("sha256:", "sha512:")) else None
        ref = f"{self.registry}/{self.repository}" + (f"@{reference}" if pinned else f":{reference}")
        url = f"{self.base}/manifests/{reference}"
        response = self._check(self.request(url, "HEAD", headers={"Accept": _ACCEPT}), (200,), str(ref))
        response.close()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = response.headers.get("Docker-Content-Digest")
        size = response.headers.get("Content-Length", "")
        if pinned and digest and digest != pinned:
            raise DigestMismatch(f"{ref}: registry reports digest {digest[:80]}")
        if digest and size.isdigit() and media_type:
            return Descriptor.from_json({"mediaType": media_type, "digest": digest, "size": int(size)}, f"HEAD of {ref}")
        got = self._check(self.request(url, "GET", headers={"Accept": _ACCEPT}), (200,), str(ref))
        body = self.transport.read(got, documents.MAX_DOCUMENT, f"manifest {ref}")
        media_type = got.headers.get("Content-Type", "").split(";")[0].strip() or mediatypes.OCI_MANIFEST
        desc = Descriptor.from_json({"mediaType": media_type, "digest": digests.of_bytes(body), "size": len(body)}, f"GET of {ref}")
        if pinned and desc.digest != pinned:
            raise DigestMismatch(f"{ref}: registry served content with digest {desc.digest}")
        return desc

    def _url(self, desc: Descriptor) -> str:
        kind = "manifests" if desc.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES else "blobs"
        return f"{self.base}/{kind}/{desc.digest}"

    def exists(self, desc: Descriptor) -> bool:
        response = self.request(self._url(desc), "HEAD", headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            response.close()
            return False
        self._check(response, (200,), desc.digest)
        return True

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        response = self.request(self._url(desc), "GET", headers={"Accept": desc.media_type})
        with response:
            self._check(response, (200,), desc.digest)
            yield self.transport.chunks(response)

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        chunks = digests.verified(chunks, desc.digest, desc.size, f"blob {desc.digest}")
        start = self._check(self.request(f"{self.base}/blobs/uploads/", "POST", headers={"Content-Length": "0"}), (202,), "start upload")
        start.close()
        location = start.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.registry} started an upload without a Location header")
        location = urljoin(self.root + "/", location)
        url = location + ("&" if "?" in location else "?") + f"digest={desc.digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
        try:
            response = self.request(url, "PUT", data=Body(chunks, desc.size), headers=headers)
        except WasmOciError:
            self._cancel(location)
            raise
        with response:
            self._check(response, (201,), f"upload of {desc.digest}")

    def _cancel(self, location: str) -> None:
        with contextlib.suppress(WasmOciError):
            self.request(location, "DELETE").close()

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self._put_manifest(desc, data, tag)

    def _put_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> Response:
        url = f"{self.base}/manifests/{tag or desc.digest}"
        data = checked(desc, data)
        response = self.request(url, "PUT", data=data, headers={"Content-Type": desc.media_type})
        with response:
            self._check(response, (201,), f"manifest {desc.digest}")
        served = response.headers.get("Docker-Content-Digest")
        if served and served != desc.digest:
            raise DigestMismatch(f"{self.registry} stored manifest as {served}, expected {desc.digest}")
        return response

    # -- OCI 1.1 referrers -----------------------------------------------------------------------
    def push_referrer(self, desc: Descriptor, data: bytes) -> bool:
        """Push a manifest that has a `subject`; True if the registry indexed it (it answers `OCI-Subject`)."""
        return "OCI-Subject" in self._put_manifest(desc, data, None).headers

    def referrers(self, digest: str) -> list[Descriptor] | None:
        """The referrers API's list for `digest`, or None where the registry has no such API (404, as distribution 2.8)."""
        url: str | None = f"{self.base}/referrers/{digest}"
        found: list[Descriptor] = []
        seen: set[str] = set()
        while url:
            if url in seen:
                raise RegistryError(f"{self.registry}: the referrers of {digest} page back to {url[:120]}")
            if len(seen) == MAX_PAGES:
                raise RegistryError(f"{self.registry}: the referrers of {digest} run past {MAX_PAGES} pages")
            if not self._own(url):
                raise RegistryError(f"{self.registry}: the referrers of {digest} continue on another host ({url[:120]})")
            seen.add(url)
            response = self.request(url, "GET", headers={"Accept": mediatypes.OCI_INDEX})
            if response.status_code == 404:
                response.close()
                return None
            with response:
                self._check(response, (200,), f"referrers of {digest}")
                what = f"referrers list of {digest} from {self.registry}"
                found += documents.index(self.transport.read(response, documents.MAX_DOCUMENT, what), what).manifests
                following = response.links.get("next", {}).get("url")
            url = urljoin(url, following) if following else None
        return found

    def tag(self, desc: Descriptor, tag: str) -> None:
        self.push_manifest(desc, fetch_bytes(self, desc, "manifest"), tag)

    def ping(self) -> None:
        """Check the credentials against /v2/, as `docker login` does."""
        url = f"{self.root}/v2/"
        response = self.transport.request("GET", url, {})
        if response.status_code == 401:
            response.close()
            response = self.transport.request("GET", url, self.authenticator.answer(response, ""))
            if response.status_code == 401:
                raise AuthenticationError(f"{self.registry} refused the credentials")
        with response:
            if response.status_code != 200:
                raise RegistryError(f"{self.registry}/v2/ answered {_describe(response, self._errors(response))}")


def _json_body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _describe(response: Response, errors: list[dict[str, Any]]) -> str:
    if errors:
        return "; ".join(f"{str(e.get('code', '?'))[:40]}: {str(e.get('message', ''))[:200]}".strip() for e in errors[:3])
    return f"HTTP {response.status_code} {str(response.reason)[:80]}"
