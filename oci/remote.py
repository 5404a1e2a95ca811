"""A repository on an OCI distribution registry, as a content store.

A `RemoteRepository` is an oras-py `Registry` (its session, TLS and cookie settings), so
oras-py's own operations (`get_tags`, `delete_tag`, `get_manifest`, ...) work on it too, through
the request layer below. Where oras-py falls short for this project it is overridden here:
  * `do_request`: answers `Basic` as well as `Bearer` challenges (oras-py's token backend only
    does Bearer), fails fast with a one-line error on unreachable hosts or TLS failures instead
    of retrying for minutes, and maps registry error codes to this project's exceptions;
  * blob transfer: uploads stream from an iterator with a known length (oras-py reads whole
    files into memory) and downloads hand raw chunks to the caller's digest check;
  * manifests are handled as raw bytes, so digests are of exactly what the registry serves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import oras.provider
import requests

from wasm_oci.errors import (
    AuthenticationError,
    DigestMismatch,
    NotFound,
    RegistryError,
    RegistryUnreachable,
    WasmOciError,
)
from wasm_oci.oci import mediatypes
from wasm_oci.oci.auth import Authenticator, Credentials, DockerConfig
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import RegistryReference
from wasm_oci.oci.target import fetch_bytes

_CHUNK = 1 << 20
_ACCEPT = ", ".join([mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST])
_NOT_FOUND_CODES = {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN", "BLOB_UPLOAD_UNKNOWN"}


def api_host(registry: str) -> str:
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


class _SizedReader:
    """A file-like view of a chunk iterator with a known length, so requests streams it with Content-Length.

    Reads may be short (http.client only needs b"" at the end); slicing never copies more than
    what is returned, so a single huge chunk costs no more than many small ones.
    """

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        self._chunks = iter(chunks)
        self._size = size
        self._current = b""
        self._offset = 0

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        while self._offset >= len(self._current):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._current, self._offset = chunk, 0
        end = len(self._current) if n is None or n < 0 else self._offset + n
        out = self._current[self._offset : end]
        self._offset += len(out)
        return out


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    try:
        errors = response.json().get("errors") or []
        return [e for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return []


def _describe(response: requests.Response) -> str:
    errors = _errors(response)
    if errors:
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors)
    return f"HTTP {response.status_code} {response.reason}"


class RemoteRepository(oras.provider.Registry):
    def __init__(self, ref: RegistryReference, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        super().__init__(hostname=ref.registry, insecure=self.options.plain_http, tls_verify=self.options.verify)
        self.registry = ref.registry
        self.repository = ref.repository
        self.base = f"{self.prefix}://{api_host(ref.registry)}/v2/{ref.repository}"
        creds = (
            Credentials(self.options.username, self.options.password or "")
            if self.options.username
            else DockerConfig().credentials(ref.registry)
        )
        self.authenticator = Authenticator(ref.registry, self.session, creds, self.options.verify)

    # -- transport -----------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, url, headers=headers, verify=self.options.verify, timeout=self.options.timeout, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            reason = str(exc.args[0].reason if exc.args and hasattr(exc.args[0], "reason") else exc)
            raise RegistryUnreachable(
                f"TLS with {self.registry} failed ({reason.splitlines()[0][:160]}); pass --ca-file for a private CA, "
                "or --plain-http for a loopback registry without TLS"
            ) from None
        except requests.exceptions.Timeout:
            raise RegistryUnreachable(f"registry {self.registry} did not answer within {self.options.timeout:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            text = str(exc)
            reason = "connection refused" if "refused" in text.lower() else "cannot connect"
            if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
                reason = "unknown host"
            raise RegistryUnreachable(f"cannot reach registry {self.registry}: {reason}") from None

    def do_request(  # type: ignore[override]
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request, answering an auth challenge once; idempotent reads retry briefly on 5xx/429."""
        scope = f"repository:{self.repository}:" + ("pull" if method in ("GET", "HEAD") else "pull,push")
        attempts = 3 if method in ("GET", "HEAD") else 1
        for attempt in range(attempts):
            sent = {**(headers or {}), **self.authenticator.header_for(scope)}
            response = self._send(method, url, sent, data=data, json=json, stream=stream)
            if response.status_code == 401:
                if hasattr(data, "read"):
                    raise AuthenticationError(f"{self.registry} refused the credentials for {self.repository}")
                sent.update(self.authenticator.answer(response, scope))
                response = self._send(method, url, sent, data=data, json=json, stream=stream)
                if response.status_code == 401:
                    raise AuthenticationError(f"{self.registry} refused the credentials for {self.repository}: {_describe(response)}")
            if response.status_code == 403:
                raise AuthenticationError(f"{self.registry} denied access to {self.repository}: {_describe(response)}")
            if response.status_code in (429, 500, 502, 503, 504) and attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
                continue
            return response
        return response

    def _check(self, response: requests.Response, ok: tuple[int, ...], what: str) -> requests.Response:
        if response.status_code in ok:
            return response
        codes = {e.get("code") for e in _errors(response)}
        if response.status_code == 404 or codes & _NOT_FOUND_CODES:
            raise NotFound(f"{what}: not found in {self.registry}/{self.repository}")
        if codes & {"DIGEST_INVALID", "SIZE_INVALID"}:
            raise DigestMismatch(f"{what}: rejected by {self.registry}: {_describe(response)}")
        raise RegistryError(f"{what}: {self.registry} answered {_describe(response)}")

    # -- Target --------------------------------------------------------------------------------
    def resolve(self, ref: RegistryReference) -> Descriptor:  # type: ignore[override]
        url = f"{self.base}/manifests/{ref.reference}"
        response = self._check(self.do_request(url, "HEAD", headers={"Accept": _ACCEPT}), (200,), str(ref))
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        digest = response.headers.get("Docker-Content-Digest")
        size = response.headers.get("Content-Length")
        if ref.digest and digest and digest != ref.digest:
            raise DigestMismatch(f"{ref}: registry reports digest {digest}")
        if not (digest and size and media_type):
            body = self._check(self.do_request(url, "GET", headers={"Accept": _ACCEPT}), (200,), str(ref)).content
            desc = Descriptor.for_bytes(media_type or mediatypes.OCI_MANIFEST, body)
            if ref.digest and desc.digest != ref.digest:
                raise DigestMismatch(f"{ref}: registry served content with digest {desc.digest}")
            return desc
        return Descriptor(media_type, digest, int(size))

    def _url(self, desc: Descriptor) -> str:
        kind = "manifests" if desc.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES else "blobs"
        return f"{self.base}/{kind}/{desc.digest}"

    def exists(self, desc: Descriptor) -> bool:
        response = self.do_request(self._url(desc), "HEAD", headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            return False
        self._check(response, (200,), desc.digest)
        return True

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        response = self.do_request(self._url(desc), "GET", headers={"Accept": desc.media_type}, stream=True)
        with response:
            self._check(response, (200,), desc.digest)
            yield self._stream(response)

    def _stream(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(_CHUNK)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"connection to {self.registry} broke during download: {exc.__class__.__name__}") from None

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        start = self._check(
            self.do_request(f"{self.base}/blobs/uploads/", "POST", headers={"Content-Length": "0"}), (202,), "start upload"
        )
        location = start.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.registry} started an upload without a Location header")
        if location.startswith("/"):
            location = f"{self.prefix}://{api_host(self.registry)}{location}"
        url = location + ("&" if "?" in location else "?") + f"digest={desc.digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
        try:
            response = self.do_request(url, "PUT", data=_SizedReader(chunks, desc.size), headers=headers)
        except WasmOciError:
            self._cancel(location)
            raise
        except requests.RequestException as exc:
            self._cancel(location)
            raise RegistryUnreachable(f"upload of {desc.digest} to {self.registry} broke: {exc.__class__.__name__}") from None
        self._check(response, (201,), f"upload of {desc.digest}")

    def _cancel(self, location: str) -> None:
        with contextlib.suppress(WasmOciError, requests.RequestException):
            self.do_request(location, "DELETE")

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self._put_manifest(desc, data, tag)

    def _put_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> requests.Response:
        url = f"{self.base}/manifests/{tag or desc.digest}"
        response = self.do_request(url, "PUT", data=data, headers={"Content-Type": desc.media_type})
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
        while url:
            response = self.do_request(url, "GET", headers={"Accept": mediatypes.OCI_INDEX})
            if response.status_code == 404:
                return None
            self._check(response, (200,), f"referrers of {digest}")
            try:
                found += [Descriptor.from_json(m) for m in response.json().get("manifests") or []]
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.registry} answered the referrers of {digest} with something not an image index") from None
            following = response.links.get("next", {}).get("url")
            url = f"{self.prefix}://{api_host(self.registry)}{following}" if following and following.startswith("/") else following
        return found

    def tag(self, desc: Descriptor, tag: str) -> None:
        self.push_manifest(desc, fetch_bytes(self, desc, "manifest"), tag)

    def ping(self) -> None:
        """Check the credentials against /v2/, as `docker login` does."""
        response = self._send("GET", f"{self.prefix}://{api_host(self.registry)}/v2/", {})
        if response.status_code == 401:
            retry = self.authenticator.answer(response, "")
            response = self._send("GET", response.url, retry)
            if response.status_code == 401:
                raise AuthenticationError(f"{self.registry} refused the credentials")
        if response.status_code != 200:
            raise RegistryError(f"{self.registry}/v2/ answered {_describe(response)}")
