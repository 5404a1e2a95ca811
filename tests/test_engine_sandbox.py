"""The sandbox: a guest sees only what its run spec grants. Uses the probe fixture
(tests/fixtures/probe, built by examples/build.sh), which tries what must be refused."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wasm_oci.engine import Engine, Preopen, RunSpec

PROBE = (Path(__file__).resolve().parent / "fixtures" / "probe" / "probe.wasm").read_bytes()
NOT_PERMITTED = "error 31\n"  # wasi:filesystem error-code not-permitted
ACCESS_DENIED = "error 1\n"  # wasi:sockets error-code access-denied


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(cache_dir=tmp_path_factory.mktemp("compiled"))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """tmp/data (what gets preopened) with a file, next to tmp/secret.txt (what must stay out of reach)."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "inside.txt").write_text("inside\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    (tmp_path / "data" / "link").symlink_to(tmp_path / "secret.txt")
    return tmp_path


def probe(engine: Engine, out: Path, *args: str, **spec: object) -> tuple[int, str]:
    result = engine.run(engine.load(PROBE, name="probe.wasm"), RunSpec(args=["probe", *args], stdout=out, **spec))  # type: ignore[arg-type]
    assert result.reason == "exit"
    return result.status, out.read_text()


def test_only_the_given_environment_is_visible(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASM_OCI_HOST_SECRET", "leak")
    assert probe(engine, tmp_path / "out", "env", env={"GIVEN": "1"}) == (0, "GIVEN=1\n")
    assert probe(engine, tmp_path / "out", "env") == (0, "")


def test_inside_the_preopen_is_readable(engine: Engine, host: Path) -> None:
    assert probe(engine, host / "out", "read", "inside.txt", preopens=[Preopen(host / "data", "/data")]) == (0, "inside\n")


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/hostname", "sub/../../secret.txt", "link"])
def test_paths_outside_the_preopen_are_refused(engine: Engine, host: Path, path: str) -> None:
    status, out = probe(engine, host / "out", "read", path, preopens=[Preopen(host / "data", "/data")])
    assert (status, out) == (1, NOT_PERMITTED)


def test_without_preopens_no_file_is_reachable(engine: Engine, tmp_path: Path) -> None:
    assert probe(engine, tmp_path / "out", "read", "/etc/hostname") == (1, "no preopens\n")


def test_read_only_preopen_refuses_writes(engine: Engine, host: Path) -> None:
    read_only = [Preopen(host / "data", "/data", read_only=True)]
    assert probe(engine, host / "out", "write", "inside.txt", "overwritten", preopens=read_only) == (1, NOT_PERMITTED)
    assert probe(engine, host / "out", "write", "new.txt", "created", preopens=read_only) == (1, NOT_PERMITTED)
    assert (host / "data" / "inside.txt").read_text() == "inside\n"
    assert not (host / "data" / "new.txt").exists()
    assert probe(engine, host / "out", "read", "inside.txt", preopens=read_only) == (0, "inside\n")


def test_read_write_preopen_allows_writes(engine: Engine, host: Path) -> None:
    assert probe(engine, host / "out", "write", "new.txt", "created", preopens=[Preopen(host / "data", "/data")]) == (0, "ok\n")
    assert (host / "data" / "new.txt").read_text() == "created"


def test_network_is_refused(engine: Engine, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        assert probe(engine, tmp_path / "out", "connect", str(port)) == (1, ACCESS_DENIED)
        with pytest.raises(TimeoutError):
            listener.accept()
