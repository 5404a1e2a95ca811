"""The shim under a real containerd 2.1, driven with `ctr` the way users drive it: images pushed
with `wasm-oci push`, pulled with `ctr images pull --plain-http`, run with
`ctr run --runtime io.containerd.wasm-oci.v1`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.events import EventWatcher
from services.registry import RegistryServer
from services.shim import EXAMPLES, EXIT_42, MEMORY_HOG, TRAP, ShimHarness, shim_harness

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

HELLO = EXAMPLES / "hello" / "hello.wasm"
SPIN = EXAMPLES / "spin" / "spin.wasm"


@pytest.fixture(scope="module")
def shim(registry: RegistryServer) -> Iterator[ShimHarness]:
    yield from shim_harness(registry)


@pytest.fixture(scope="module")
def hello(shim: ShimHarness) -> str:
    return shim.push("hello", HELLO)


@pytest.fixture(scope="module")
def spin(shim: ShimHarness) -> str:
    return shim.push("spin", SPIN)


def test_run_prints_the_guest_output_with_args_and_env(shim: ShimHarness, hello: str) -> None:
    result = shim.ctr_run(hello, "hello-args", "/hello.wasm", "a1", "two words", flags=["--env", "GREETING=hi"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from wasm-oci!\narg: /hello.wasm\narg: a1\narg: two words\nGREETING=hi\n"


def test_image_entrypoint_and_env_are_the_defaults(shim: ShimHarness, hello: str) -> None:
    result = shim.ctr_run(hello, "hello-defaults")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello from wasm-oci!\narg: /hello.wasm\n")


def test_exit_codes_are_the_guests_own(shim: ShimHarness, hello: str) -> None:
    assert shim.ctr_run(hello, "exit-1", flags=["--env", "EXIT_CODE=3"]).returncode == 1
    assert shim.ctr_run(shim.push("exit42", EXIT_42), "exit-42").returncode == 42


def test_a_trapping_guest_exits_134_and_says_why(shim: ShimHarness) -> None:
    result = shim.ctr_run(shim.push("trap", TRAP), "trap-1")
    assert result.returncode == 134
    assert "unreachable" in shim.containerd.log_path.read_text()


def test_kill_stops_a_spinning_guest_with_runc_statuses(shim: ShimHarness, spin: str) -> None:
    for signal, status in (("SIGKILL", 137), ("SIGTERM", 143)):
        task_id = f"spin-{signal.lower()}"
        proc = shim.run_background(spin, task_id)
        shim.wait_status(task_id, "RUNNING")
        began = time.monotonic()
        shim.containerd.ctr("task", "kill", "--signal", signal, task_id)
        proc.wait(timeout=20)
        print(f"{signal}: ctr task kill -> ctr run exited in {(time.monotonic() - began) * 1e3:.0f} ms")
        assert proc.returncode == status, proc.stderr.read() if proc.stderr else ""


def test_detached_task_is_listed_inspected_and_deleted(shim: ShimHarness, spin: str) -> None:
    ctr = shim.containerd.ctr
    ctr("run", "-d", "--runtime", "io.containerd.wasm-oci.v1", "--memory-limit", str(64 << 20), spin, "spin-detached")
    try:
        shim.wait_status("spin-detached", "RUNNING")
        listed = next(line.split() for line in ctr("task", "ls").stdout.splitlines() if line.startswith("spin-detached"))
        pid = int(listed[1])
        assert pid in shim.daemons()
        assert ctr("task", "ps", "spin-detached").stdout.split()[2] == str(pid)
        assert "pids.current" in ctr("task", "metrics", "spin-detached").stdout
        data = json.loads(ctr("task", "metrics", "--format", "json", "spin-detached").stdout)
        assert data["pids"]["current"] == 1
        assert data["memory"]["usage_limit"] == 64 << 20
        assert data["cpu"]["usage_usec"] > 0  # the spinning guest's thread
        exec_result = ctr("task", "exec", "--exec-id", "e1", "spin-detached", "/x", check=False)
        assert exec_result.returncode != 0 and "exec is not supported" in exec_result.stderr
        assert "running" in ctr("task", "delete", "spin-detached", check=False).stderr
        ctr("task", "kill", "--signal", "SIGKILL", "spin-detached")
        shim.wait_status("spin-detached", "STOPPED")
        assert "exit code 137" in ctr("task", "delete", "spin-detached").stderr
    finally:
        ctr("task", "kill", "--signal", "SIGKILL", "spin-detached", check=False)
        ctr("task", "delete", "--force", "spin-detached", check=False)
        ctr("container", "rm", "spin-detached", check=False)


def test_task_events_reach_containerd(shim: ShimHarness, hello: str) -> None:
    watcher = EventWatcher(shim.containerd)
    try:
        assert shim.ctr_run(hello, "hello-events", flags=["--env", "EXIT_CODE=1"]).returncode == 1
        seen: dict[str, str] = {}
        while "/tasks/delete" not in seen:
            line = watcher.next_with("hello-events")
            topic = next((word for word in line.split() if word.startswith("/tasks/")), None)
            if topic:
                seen[topic] = line
    finally:
        watcher.stop()
    assert list(seen) == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_line = seen["/tasks/exit"]
    assert json.loads(exit_line[exit_line.index("{") :])["exit_status"] == 1


def test_tasks_share_one_daemon_per_namespace(shim: ShimHarness, hello: str) -> None:
    for n in range(3):
        assert shim.ctr_run(hello, f"hello-reuse-{n}").returncode == 0
        daemons = shim.daemons()
        assert len(daemons) == 1, daemons
        if n == 0:
            first = daemons
    assert shim.daemons() == first


def test_fifty_tasks_at_once(shim: ShimHarness, hello: str) -> None:
    procs = [shim.run_background(hello, f"hello-many-{n}", "/hello.wasm", str(n)) for n in range(50)]
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out == f"Hello from wasm-oci!\narg: /hello.wasm\narg: {n}\n"
    assert len(shim.daemons()) == 1


def test_wasm_file_inside_an_ordinary_image(shim: ShimHarness) -> None:
    ref = shim.push_rootfs_image("rootfs-hello", HELLO, "/bin/hello.wasm")
    result = shim.ctr_run(ref, "rootfs-hello", flags=["--env", "GREETING=from-rootfs"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from wasm-oci!\narg: /bin/hello.wasm\nGREETING=from-rootfs\n"


def test_bind_mounts_are_the_only_files_granted(shim: ShimHarness, hello: str, tmp_path: Path) -> None:
    (tmp_path / "greeting.txt").write_text("hello from the host\n")
    result = shim.ctr_run(hello, "hello-mount", flags=["--mount", f"type=bind,src={tmp_path},dst=/data,options=rbind:ro"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("hello from the host\n")
    assert "hello from the host" not in shim.ctr_run(hello, "hello-nomount").stdout


def test_memory_limit_stops_a_hog_without_harming_others(shim: ShimHarness, spin: str) -> None:
    bystander = shim.run_background(spin, "spin-bystander")
    try:
        shim.wait_status("spin-bystander", "RUNNING")
        hog = shim.push("hog", MEMORY_HOG)
        assert shim.ctr_run(hog, "hog-1", flags=["--memory-limit", str(8 << 20)]).returncode == 137
        assert shim.task_status("spin-bystander") == "RUNNING"
        assert shim.ctr_run(shim.images["hello"] if "hello" in shim.images else shim.push("hello", HELLO), "after-hog").returncode == 0
    finally:
        shim.containerd.ctr("task", "kill", "--signal", "SIGKILL", "spin-bystander", check=False)
        bystander.wait(timeout=20)


def _config(path: Path, text: str) -> list[str]:
    """ctr flags that run a task under this shim configuration (its own daemon group)."""
    path.write_text(text)
    return ["--runtime-config-path", str(path)]


def test_trust_policy_refuses_an_unsigned_image_at_create(shim: ShimHarness, tmp_path: Path) -> None:
    private, public = shim.keygen(tmp_path / "release")
    signed = shim.push("signed", HELLO, sign_key=private)
    unsigned = shim.push("unsigned", HELLO)
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {"default": {"mode": "off"}, "rules": [{"scope": f"{shim.registry.host}/shim", "mode": "enforce", "keys": [str(public)]}]}
        )
    )
    flags = _config(tmp_path / "trust.toml", f'policy = "{policy}"\nplain_http = ["{shim.registry.host}"]\n')
    trusted = shim.ctr_run(signed, "trusted", flags=flags)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("Hello from wasm-oci!")
    refused = shim.ctr_run(unsigned, "untrusted", flags=flags)
    assert refused.returncode != 0
    assert f"{unsigned}@sha256:" in refused.stderr and "is not signed" in refused.stderr and str(policy) in refused.stderr
    assert shim.task_status("untrusted") is None


def test_concurrent_starts_of_a_new_group_spawn_one_daemon(shim: ShimHarness, hello: str, tmp_path: Path) -> None:
    flags = _config(tmp_path / "race.toml", "# a group of its own\nlinger = 30\n")
    before = set(shim.daemons())
    procs = [shim.run_background(hello, f"race-{n}", flags=flags) for n in range(8)]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    assert len(set(shim.daemons()) - before) == 1


def test_an_idle_daemon_exits_and_the_next_start_gets_a_new_one(shim: ShimHarness, hello: str, tmp_path: Path) -> None:
    flags = _config(tmp_path / "brief.toml", "linger = 0\n")
    before = set(shim.daemons())
    for n in range(6):  # each start races the previous daemon's exit
        assert shim.ctr_run(hello, f"brief-{n}", flags=flags).returncode == 0
    deadline = time.monotonic() + 10
    while set(shim.daemons()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(shim.daemons()) - before
    created = [line for line in shim.containerd.log_path.read_text().splitlines() if 'id="brief-' in line and "created from" in line]
    assert len(created) == 6 and all("(program hit," in line or "(program reused)" in line for line in created[1:]), created


def test_grouping_per_task_and_per_pod(shim: ShimHarness, spin: str, tmp_path: Path) -> None:
    per_task = _config(tmp_path / "task.toml", 'group = "task"\n')
    sandbox = "io.kubernetes.cri.sandbox-id="
    runs = {
        "alone-1": per_task,
        "alone-2": per_task,
        "pod-a-1": ["--annotation", sandbox + "pod-a"],
        "pod-a-2": ["--annotation", sandbox + "pod-a"],
        "pod-b-1": ["--annotation", sandbox + "pod-b"],
    }
    before = set(shim.daemons())
    try:
        for task_id, flags in runs.items():
            shim.containerd.ctr("run", "-d", "--runtime", "io.containerd.wasm-oci.v1", *flags, spin, task_id)
            shim.wait_status(task_id, "RUNNING")
        pid = {
            task_id: int(
                next(line.split()[1] for line in shim.containerd.ctr("task", "ls").stdout.splitlines() if line.startswith(task_id + " "))
            )
            for task_id in runs
        }
        assert pid["alone-1"] != pid["alone-2"]
        assert pid["pod-a-1"] == pid["pod-a-2"] != pid["pod-b-1"]
        assert len(set(shim.daemons()) - before) == 4
    finally:
        for task_id in runs:
            shim.containerd.ctr("task", "kill", "--signal", "SIGKILL", task_id, check=False)
            shim.containerd.ctr("task", "delete", "--force", task_id, check=False)
            shim.containerd.ctr("container", "rm", task_id, check=False)


def test_a_pod_sandbox_runs_until_killed(shim: ShimHarness, hello: str) -> None:
    flags = ["--annotation", "io.kubernetes.cri.container-type=sandbox", "--annotation", "io.kubernetes.cri.sandbox-id=pause-1"]
    proc = shim.run_background(hello, "pause-1", flags=flags)
    shim.wait_status("pause-1", "RUNNING")
    time.sleep(0.2)
    assert shim.task_status("pause-1") == "RUNNING"
    shim.containerd.ctr("task", "kill", "--signal", "SIGKILL", "pause-1")
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 137 and out == ""
