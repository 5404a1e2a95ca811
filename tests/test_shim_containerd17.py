"""The same shim under containerd 1.7 (Debian trixie's), which speaks task API v2 over ttrpc
and refuses a `start` that announces version 3: `start` announces 2 to it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from services.events import EventWatcher
from services.registry import RegistryServer
from services.shim import EXAMPLES, EXIT_42, RUNTIME, ShimHarness, shim_harness

pytestmark = [pytest.mark.containerd, pytest.mark.registry]


@pytest.fixture(scope="module")
def shim17(registry: RegistryServer) -> Iterator[ShimHarness]:
    yield from shim_harness(registry, release="1.7")


def test_run_exit_codes_and_daemon_reuse(shim17: ShimHarness) -> None:
    hello = shim17.push("hello", EXAMPLES / "hello" / "hello.wasm")
    result = shim17.ctr_run(hello, "hello-17", "/hello.wasm", "a1", flags=["--env", "GREETING=1.7"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from wasm-oci!\narg: /hello.wasm\narg: a1\nGREETING=1.7\n"
    assert shim17.ctr_run(shim17.push("exit42", EXIT_42), "exit-42-17").returncode == 42
    assert len(shim17.daemons()) == 1
    # What `start` learnt from `containerd-1.7 --version` and announced (see shim/api_version.py).
    assert (shim17.containerd.run_dir / "wasm-oci" / "containerd-api").read_text().endswith("\0" + "2")


def test_detached_kill_events_and_delete(shim17: ShimHarness) -> None:
    spin = shim17.push("spin", EXAMPLES / "spin" / "spin.wasm")
    ctr = shim17.containerd.ctr
    watcher = EventWatcher(shim17.containerd)
    try:
        ctr("run", "-d", "--runtime", RUNTIME, spin, "spin-17")
        shim17.wait_status("spin-17", "RUNNING")
        assert int(ctr("task", "ls").stdout.split("spin-17")[1].split()[0]) in shim17.daemons()
        ctr("task", "kill", "--signal", "SIGKILL", "spin-17")
        line = watcher.next_with("/tasks/exit")
    finally:
        watcher.stop()
    assert json.loads(line[line.index("{") :])["exit_status"] == 137
    shim17.wait_status("spin-17", "STOPPED")
    ctr("task", "delete", "spin-17")
    ctr("container", "rm", "spin-17")
    assert shim17.task_status("spin-17") is None
