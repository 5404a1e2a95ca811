"""Parallel blob transfers and the CLI's start-up: the blobs of one artifact move at once, a
failure of one stops the others and leaves nothing behind, and push/pull never load oras-py.

Overlap is observed at a registry of the test's own (`HostileRegistry` with a fault added
here) that holds every blob request open until another one has arrived or a deadline passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.hostile_registry import FAULTS, HostileRegistry, Route, _Handler, hello_artifact, send, send_error_json, sha256
from services.registry import RegistryServer
from services.startup import loaded
from services.wasmgen import HELLO
from wasm_oci.errors import DigestMismatch
from wasm_oci.oci import distribution as api
from wasm_oci.oci.options import RegistryOptions

PLAIN = RegistryOptions(plain_http=True, deadline=20.0)
WAIT = 5.0
"""How long a held blob request waits for a second one before it is answered anyway."""


class Overlap:
    """Counts the blob requests in flight; each waits (up to WAIT) until two have been in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.both = threading.Event()

    def hold(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= 2:
                self.both.set()
        self.both.wait(WAIT)

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


def _is_blob_transfer(route: Route) -> bool:
    return (route.kind == "blobs" and route.method == "GET") or (route.kind == "uploads" and route.method == "PUT")


def _overlap(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Honest answers, but each blob download or upload is held until another is in flight."""
    if not _is_blob_transfer(route):
        return False
    overlap: Overlap = owner.params["overlap"]
    overlap.hold()
    try:
        owner._honest(h, route, owner.params.pop(f"body:{threading.get_ident()}", b""))
    finally:
        overlap.done()
    return True


def _one_fails(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Once the layer's transfer has begun, the config's fails: a download gets wrong bytes, an
    upload is rejected. The layer's download trickles (64 bytes every 0.25 s: ~30 s in all), so
    a pull that waited for it instead of abandoning it would be seen."""
    if not _is_blob_transfer(route):
        return False
    art = hello_artifact()
    layer, config = sha256(art.layer), sha256(art.config)
    digest = route.ref if route.kind == "blobs" else (route.query.get("digest") or [""])[0]
    started: threading.Event = owner.params["layer_started"]
    if digest == layer:
        started.set()
        if route.kind == "uploads":
            owner.blobs[layer] = art.layer
            send(h, 201, b"", {"Docker-Content-Digest": layer})
            return True
        h.send_response(200)
        h.send_header("Content-Length", str(len(art.layer)))
        h.end_headers()
        for n in range(0, len(art.layer), 64):
            if owner.stopping.is_set():
                break
            try:
                h.wfile.write(art.layer[n : n + 64])
                h.wfile.flush()
            except OSError:  # the client gave up on it, as it should
                break
            time.sleep(0.25)
        return True
    if digest != config and route.kind == "blobs":
        return False
    started.wait(WAIT)  # (an upload that is not the layer is the config: push packages its own)
    if route.kind == "blobs":
        send(h, 200, b"x" * len(art.config), {"Content-Type": "application/octet-stream"})
    else:
        send_error_json(h, 400, "DIGEST_INVALID")
    return True


FAULTS["test.overlap"] = _overlap
FAULTS["test.one_fails"] = _one_fails


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as reg:
        yield reg


def test_copy_downloads_config_and_layer_at_once(hostile: HostileRegistry, tmp_path: Path) -> None:
    """A copy fetches the blobs of a manifest in parallel (a pull reads the config earlier, to
    check the artifact, and copies it from memory: its copy downloads the layer alone)."""
    hostile.seed_hello()
    overlap = Overlap()
    hostile.mode, hostile.params["overlap"] = "test.overlap", overlap
    result = api.copy(f"{hostile.host}/acme/hello:1.0", f"oci:{tmp_path / 'layout'}:1.0", PLAIN)
    assert overlap.most == 2, "the config and the layer were fetched one after the other"
    assert result.stats is not None and result.stats.blobs_copied == 2


def test_push_uploads_config_and_layer_at_once(hostile: HostileRegistry) -> None:
    overlap = Overlap()
    hostile.mode, hostile.params["overlap"] = "test.overlap", overlap
    original = hostile._read_body

    def keep_body(h: _Handler) -> bytes:  # the fault answers PUTs itself: hand it what was read
        body = original(h)
        hostile.params[f"body:{threading.get_ident()}"] = body
        return body

    hostile._read_body = keep_body  # type: ignore[method-assign]
    result = api.push(str(HELLO), f"{hostile.host}/acme/pushed:1", PLAIN, PLAIN)
    assert overlap.most == 2, "the config and the layer were uploaded one after the other"
    assert hostile.tags["1"] == result.descriptor.digest
    assert len(hostile.blobs) == 2


def test_a_failed_blob_stops_the_copy_and_leaves_nothing(hostile: HostileRegistry, tmp_path: Path) -> None:
    hostile.seed_hello()
    hostile.mode = "test.one_fails"
    hostile.params["layer_started"] = threading.Event()
    layout = tmp_path / "layout"
    began = time.monotonic()
    with pytest.raises(DigestMismatch):
        api.copy(f"{hostile.host}/acme/hello:1.0", f"oci:{layout}:1", PLAIN, PLAIN)
    assert hostile.params["layer_started"].is_set(), "the layer was not fetched alongside the config"
    assert time.monotonic() - began < WAIT, "the trickling layer was waited for instead of abandoned"
    left = [p.name for p in (layout / "blobs").rglob("*") if p.is_file()] if (layout / "blobs").exists() else []
    assert left == [], f"blobs or temporary files left in the layout: {left}"
    assert not (layout / "index.json").exists(), "a tag was written after a blob failed"


def test_a_rejected_upload_stops_the_push_and_tags_nothing(hostile: HostileRegistry) -> None:
    hostile.mode = "test.one_fails"
    hostile.params["layer_started"] = threading.Event()
    with pytest.raises(DigestMismatch):
        api.push(str(HELLO), f"{hostile.host}/acme/pushed:1", PLAIN, PLAIN)
    assert hostile.params["layer_started"].is_set(), "the layer was not uploaded alongside the config"
    assert hostile.tags == {} and hostile.manifests == {}, "a manifest or tag was pushed after a blob failed"


@pytest.mark.parametrize("command", ["push", "pull", "inspect"])
def test_registry_commands_load_neither_oras_nor_requests(command: str, registry: RegistryServer, tmp_path: Path) -> None:
    """oras-py (jsonschema) and requests cost ~150 ms to import; no command's path needs them (nor
    the engine's, nor, without signatures to check, cryptography's)."""
    ref = f"{registry.host}/startup/{command}:1"
    env = {
        "HOME": str(tmp_path),
        "WASM_OCI_HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "PATH": "/usr/bin:/bin",
    }

    def probe(*args: str | Path) -> str:
        return " ".join(loaded(args, env))

    probe("package", HELLO, "-t", "startup:1")  # packaging validates the wasm with wasmtime: not what is probed
    pushed = probe("push", "startup:1", ref, "--plain-http")
    if command == "push":
        assert pushed == ""
    elif command == "pull":
        assert probe("pull", ref, "--plain-http", "-o", tmp_path / "out.wasm") == ""
        assert (tmp_path / "out.wasm").read_bytes() == HELLO.read_bytes()
    else:  # inspect looks signatures up, which needs the signing code but still not oras-py
        assert probe("inspect", ref, "--plain-http") in ("", "cryptography")


def test_a_durable_write_behind_is_whole_or_absent(tmp_path: Path) -> None:
    """A durable write long enough for write-behind lands whole; one that fails midway leaves
    neither the file nor its temporary."""
    from wasm_oci.files import WRITE_BEHIND, atomic_write

    piece = bytes(range(256)) * 4096  # 1 MiB
    count = 3 * WRITE_BEHIND // len(piece) + 1
    target = tmp_path / "out.wasm"
    atomic_write(target, (piece for _ in range(count)))
    assert target.stat().st_size == count * len(piece) and target.read_bytes()[: len(piece)] == piece

    def failing() -> Iterator[bytes]:
        for _ in range(count):
            yield piece
        raise DigestMismatch("the last chunk did not check out")

    with pytest.raises(DigestMismatch):
        atomic_write(tmp_path / "failed.wasm", failing())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wasm"]
