"""Faults around the shim, on a containerd 2.1 of their own: the daemon killed with tasks
running, containerd restarted under a running task."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine_release import BLOCKED_WRITER

from services.events import EventWatcher
from services.registry import RegistryServer
from services.shim import EXAMPLES, RUNTIME, ShimHarness, shim_harness, sleeper

pytestmark = [pytest.mark.containerd, pytest.mark.registry]


@pytest.fixture(scope="module")
def faulty(registry: RegistryServer) -> Iterator[ShimHarness]:
    yield from shim_harness(registry)


def _mounted_under(pid: int, text: str) -> list[str]:
    return [line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if text in line]


def test_sigkilled_daemon_is_cleaned_up_by_containerd(faulty: ShimHarness) -> None:
    spin = faulty.push("spin", EXAMPLES / "spin" / "spin.wasm")
    ctr = faulty.containerd.ctr
    tasks = ("victim-1", "victim-2")
    for task_id in tasks:
        ctr("run", "-d", "--runtime", RUNTIME, spin, task_id)
        faulty.wait_status(task_id, "RUNNING")
    (daemon,) = faulty.daemons()
    assert faulty.containerd.proc is not None
    containerd_pid = faulty.containerd.proc.pid
    bundles = [faulty.containerd.state / "io.containerd.runtime.v2.task" / faulty.containerd.namespace / t for t in tasks]
    assert all(_mounted_under(containerd_pid, f"{bundle}/rootfs") for bundle in bundles)
    watcher = EventWatcher(faulty.containerd)
    try:
        os.kill(daemon, signal.SIGKILL)
        exits = {}
        while len(exits) < len(tasks):
            line = watcher.next_with("/tasks/exit", timeout=20)
            event = json.loads(line[line.index("{") :])
            exits[event["container_id"]] = event["exit_status"]
    finally:
        watcher.stop()
    assert exits == dict.fromkeys(tasks, 137)
    for task_id, bundle in zip(tasks, bundles, strict=False):
        faulty.wait_status(task_id, None)
        assert not bundle.exists()
        assert not _mounted_under(containerd_pid, f"{bundle}/rootfs")
        ctr("container", "rm", task_id)
    hello = faulty.push("hello", EXAMPLES / "hello" / "hello.wasm")
    assert faulty.ctr_run(hello, "after-kill").returncode == 0
    assert daemon not in faulty.daemons()


def test_containerd_restart_reconnects_and_sees_the_exit(faulty: ShimHarness) -> None:
    image = faulty.push("sleep-3s", sleeper(3, 7))
    ctr = faulty.containerd.ctr
    ctr("run", "-d", "--runtime", RUNTIME, image, "sleeper")
    began = time.monotonic()
    faulty.wait_status("sleeper", "RUNNING")
    daemons = faulty.daemons()
    faulty.containerd.restart()
    assert time.monotonic() - began < 3, "the guest ended before containerd came back"
    assert faulty.task_status("sleeper") == "RUNNING"
    faulty.wait_status("sleeper", "STOPPED", timeout=20)
    assert "exit with non-zero exit code 7" in ctr("task", "delete", "sleeper").stderr
    ctr("container", "rm", "sleeper")
    assert faulty.daemons() == daemons


def test_kill_of_a_guest_blocked_in_a_host_call_is_reported_at_once(faulty: ShimHarness) -> None:
    """A guest blocked writing to a stdout its client does not read: a host call a kill cannot
    cut short (clock waits and stdin reads it can, see test_engine_limits), so the shim
    abandons it after its grace."""
    image = faulty.push("blocked-writer", BLOCKED_WRITER)
    ctr = faulty.containerd.ctr
    client = faulty.run_background(image, "blocked")  # attached, its output never read
    try:
        faulty.wait_status("blocked", "RUNNING")
        time.sleep(0.5)  # the guest fills its FIFOs and the client's pipes, then blocks
        began = time.monotonic()
        ctr("task", "kill", "--signal", "SIGKILL", "blocked")
        faulty.wait_status("blocked", "STOPPED", timeout=5)
        print(f"blocked guest reported stopped {(time.monotonic() - began) * 1e3:.0f} ms after ctr task kill")
        assert "blocked in a host call" in faulty.containerd.log_path.read_text()
    finally:
        client.kill()  # its FIFO ends close: the guest's write fails, and the stop ends it
        client.communicate(timeout=10)
    assert "exit code 137" in ctr("task", "delete", "blocked").stderr
    ctr("container", "rm", "blocked")
