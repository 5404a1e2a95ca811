"""Session fixtures that run the real peers on loopback: registries, containerd, peer CLIs.

Every service is started once per session and always stopped in teardown (also when tests
fail); daemons also get SIGTERM if this process dies. Binaries come from
tests/tools/install-system-deps.sh; a missing one fails the fixture and names that script.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# `services` lives beside this file; make it importable whatever pytest's import mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from services import proxy_components  # noqa: E402
from services.containerd import ContainerdServer  # noqa: E402
from services.registry import (  # noqa: E402
    RegistryServer,
    plain_registry,
    tls_basic_registry,
)
from services.registry import (  # noqa: E402
    token_registry as make_token_registry,
)
from services.tools import MissingToolError, ToolRunner  # noqa: E402


def _serve_registry(server: RegistryServer) -> Iterator[RegistryServer]:
    try:
        server.start()
    except MissingToolError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry, no auth: `host`, `base_url`, `storage_dir`, `blob_path()`."""
    yield from _serve_registry(plain_registry(tmp_path_factory.mktemp("registry")))


@pytest.fixture(scope="session")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """HTTPS registry (test CA in `ca_cert`) with htpasswd basic auth (`username`, `password`)."""
    yield from _serve_registry(tls_basic_registry(tmp_path_factory.mktemp("secure-registry")))


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry with bearer-token auth; `token_server` issues the JWTs."""
    yield from _serve_registry(make_token_registry(tmp_path_factory.mktemp("token-registry")))


@pytest.fixture(scope="session")
def containerd() -> Iterator[ContainerdServer]:
    """A private containerd 2.1 (own mount namespace); `ctr()`, `shim_bin_dir`, `address`.

    Its dir is a short mkdtemp under /tmp, not pytest's tmp dir: unix socket paths are
    limited to 108 bytes.
    """
    workdir = Path(tempfile.mkdtemp(prefix="wasm-oci-ctrd-"))
    server = ContainerdServer(workdir=workdir)
    try:
        try:
            server.start()
        except MissingToolError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def peer_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOME/DOCKER_CONFIG for peer CLIs, so logins never touch the real ~/.docker."""
    return tmp_path_factory.mktemp("peer-home")


def _runner(tool: str, home: Path) -> ToolRunner:
    try:
        return ToolRunner(tool, home)
    except MissingToolError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def oras_cli(peer_home: Path) -> ToolRunner:
    """`oras_cli("push", ...)` -> CompletedProcess; raises AssertionError on failure."""
    return _runner("oras", peer_home)


@pytest.fixture(scope="session")
def crane_cli(peer_home: Path) -> ToolRunner:
    """`crane_cli("digest", ...)` -> CompletedProcess; raises AssertionError on failure."""
    return _runner("crane", peer_home)


@pytest.fixture
def wasm_oci(tmp_path: Path) -> ToolRunner:
    """The installed `wasm-oci` CLI as a real process, with a private store and Docker config."""
    home = tmp_path / "wasm-oci-home"
    exe = Path(sys.executable).with_name("wasm-oci")
    return ToolRunner(str(exe), home, {"WASM_OCI_HOME": str(home / "data"), "NO_COLOR": "1"})


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process API calls get the same isolation as `wasm_oci`: own store, own Docker config."""
    home = tmp_path / "api-home"
    (home / ".docker").mkdir(parents=True)
    monkeypatch.setenv("WASM_OCI_HOME", str(home / "data"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.setenv("HOME", str(home))
    return home


_MARKED_BY_FIXTURE = {
    "registry": {"registry", "secure_registry", "token_registry"},
    "containerd": {"containerd"},
    "peer": {"oras_cli", "crane_cli"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the real services their fixtures start, so `-m "not containerd"` and the
    like select truly (modules that start their own containerd mark themselves)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _MARKED_BY_FIXTURE.items():
            if used & fixtures:
                item.add_marker(getattr(pytest.mark, marker))


# wasi:http proxy guests built by real toolchains (tests/services/proxy_components.py), once a session
@pytest.fixture(scope="session")
def app_wasm() -> Path:
    """The componentize-py guest of tests/fixtures/proxy/app.py."""
    try:
        return proxy_components.python_app()
    except proxy_components.BuildUnavailable as exc:  # the `test` extra has it: its absence is a broken setup
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def fixed_wasm() -> Path:
    """The wasm-tools guest of tests/fixtures/proxy/fixed/fixed.wat."""
    return proxy_components.fixed()
