"""The shim's binary and daemon driven directly, as containerd drives them, without containerd in
between: `start` and `delete` as processes (their output, their imports), the task service over
gRPC with a stock gRPC client, and both task API versions over ttrpc.

The bundles hold their Wasm in `rootfs/` and get no rootfs mounts, so nothing here needs
containerd's image store; the events the daemon publishes go to the session's containerd.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.pool import ThreadPool
from pathlib import Path

import grpc
import pytest
from google.protobuf.any_pb2 import Any

from services.containerd import ContainerdServer
from services.shim import EXAMPLES, module
from services.tools import find_tool
from wasm_oci.proto import task_pb2, task_pb2_grpc
from wasm_oci.shim.launcher import PYTHON_NAME
from wasm_oci.shim.launcher import write as write_launcher
from wasm_oci.shim.transport.ttrpc import TtrpcClient
from wasm_oci.shim.wire import field_bytes

pytestmark = pytest.mark.containerd

NAMESPACE = "direct"
METADATA = (("containerd-namespace", NAMESPACE),)
FORBIDDEN_IN_START_AND_DELETE = ("grpc", "google.protobuf", "wasmtime", "wasm_oci.engine", "asyncio", "wasm_oci.proto")


class Shim:
    """The launcher run as containerd runs it, against one private run dir."""

    def __init__(self, tmp: Path, containerd: ContainerdServer, protocol: str) -> None:
        self.launcher = write_launcher(tmp / "bin")
        self.run_dir = Path(tempfile.mkdtemp(prefix="wos-"))  # socket paths must stay under 108 bytes
        self.config = tmp / "shim.toml"
        self.config.write_text(f'protocol = "{protocol}"\nrun_dir = "{self.run_dir}"\nlinger = 0\ncache_dir = "{tmp / "cache"}"\n')
        self.containerd = containerd
        self.tmp = tmp

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TTRPC_ADDRESS": str(self.containerd.ttrpc_address),
            "GRPC_ADDRESS": str(self.containerd.address),
            "NAMESPACE": NAMESPACE,
            "WASM_OCI_SHIM_CONFIG": str(self.config),
            "WASM_OCI_HOME": str(self.tmp / "home"),
        }

    def command(
        self, task_id: str, action: str, bundle: Path, *python_flags: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Through the sh launcher, or straight through the Python one when given Python flags."""
        python = [sys.executable, "-S", *python_flags, str(self.launcher.with_name(PYTHON_NAME))] if python_flags else [str(self.launcher)]
        argv = [
            *python,
            "-namespace",
            NAMESPACE,
            "-address",
            str(self.containerd.address),
            "-publish-binary",
            find_tool("containerd"),
            "-id",
            task_id,
        ]
        if action == "delete":
            argv += ["-bundle", str(bundle)]
        return subprocess.run(
            [*argv, action], cwd=bundle, env=env or self.env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )

    def bundle(self, task_id: str, wasm: Path, *args: str, env: tuple[str, ...] = ()) -> Path:
        bundle = self.tmp / "bundles" / task_id
        (bundle / "rootfs").mkdir(parents=True)
        shutil.copy(wasm, bundle / "rootfs" / "app.wasm")
        spec = {
            "ociVersion": "1.1.0",
            "process": {"args": ["/app.wasm", *args], "env": list(env), "cwd": "/"},
            "root": {"path": "rootfs"},
            "linux": {"resources": {"memory": {"limit": 32 << 20}}},
        }
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def start(self, task_id: str, bundle: Path) -> dict[str, object]:
        result = self.command(task_id, "start", bundle)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)


def imported(importtime_stderr: bytes) -> set[str]:
    return {line.split("|")[-1].strip() for line in importtime_stderr.decode().splitlines() if line.startswith("import time:")}


@pytest.fixture
def grpc_shim(tmp_path: Path, containerd: ContainerdServer) -> Iterator[Shim]:
    shim = Shim(tmp_path, containerd, "grpc")
    yield shim
    _kill_daemons(shim.run_dir)


def _kill_daemons(run_dir: Path) -> None:
    """The daemons started with this run dir (it is in their -group-dir flag), then the dir."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(run_dir).encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue
    shutil.rmtree(run_dir, ignore_errors=True)


def test_start_announces_a_grpc_daemon_that_serves_the_task_api(grpc_shim: Shim) -> None:
    hello = grpc_shim.bundle("hello", EXAMPLES / "hello" / "hello.wasm", "a1", env=("GREETING=direct",))
    bootstrap = grpc_shim.start("hello", hello)
    assert bootstrap["version"] == 3 and bootstrap["protocol"] == "grpc"
    address = str(bootstrap["address"])
    assert address.startswith("/")  # containerd's gRPC dialer wants a plain path
    out = hello / "stdout"
    with grpc.insecure_channel(f"unix:{address}") as channel:
        task = task_pb2_grpc.TaskStub(channel)
        created = task.Create(task_pb2.CreateTaskRequest(id="hello", bundle=str(hello), stdout=str(out)), metadata=METADATA, timeout=30)
        assert created.pid > 0
        assert task.State(task_pb2.StateRequest(id="hello"), metadata=METADATA).status == 1  # CREATED
        task.Start(task_pb2.StartRequest(id="hello"), metadata=METADATA, timeout=10)
        waited = task.Wait(task_pb2.WaitRequest(id="hello"), metadata=METADATA, timeout=10)
        assert waited.exit_status == 0
        assert out.read_text() == "Hello from wasm-oci!\narg: /app.wasm\narg: a1\nGREETING=direct\n"
        state = task.State(task_pb2.StateRequest(id="hello"), metadata=METADATA)
        assert state.status == 3 and state.exited_at.seconds > 0  # STOPPED
        deleted = task.Delete(task_pb2.DeleteRequest(id="hello"), metadata=METADATA, timeout=10)
        assert deleted.exit_status == 0
        with pytest.raises(grpc.RpcError) as missing:
            task.State(task_pb2.StateRequest(id="hello"), metadata=METADATA)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        task.Shutdown(task_pb2.ShutdownRequest(id="hello"), metadata=METADATA)


def test_kill_delivers_within_100ms_and_unsupported_calls_say_so(grpc_shim: Shim) -> None:
    spin = grpc_shim.bundle("spin", EXAMPLES / "spin" / "spin.wasm")
    address = str(grpc_shim.start("spin", spin)["address"])
    with grpc.insecure_channel(f"unix:{address}") as channel:
        task = task_pb2_grpc.TaskStub(channel)
        task.Create(task_pb2.CreateTaskRequest(id="spin", bundle=str(spin)), metadata=METADATA, timeout=30)
        task.Start(task_pb2.StartRequest(id="spin"), metadata=METADATA, timeout=10)
        for call, request, code, text in (
            (task.Exec, task_pb2.ExecProcessRequest(id="spin", exec_id="e1"), grpc.StatusCode.UNIMPLEMENTED, "exec is not supported"),
            (task.Pause, task_pb2.PauseRequest(id="spin"), grpc.StatusCode.UNIMPLEMENTED, "pause"),
            (task.Resume, task_pb2.ResumeRequest(id="spin"), grpc.StatusCode.UNIMPLEMENTED, "resume"),
            (task.Checkpoint, task_pb2.CheckpointTaskRequest(id="spin"), grpc.StatusCode.UNIMPLEMENTED, "checkpoint"),
            (task.ResizePty, task_pb2.ResizePtyRequest(id="spin"), grpc.StatusCode.FAILED_PRECONDITION, "no terminal"),
            (task.Delete, task_pb2.DeleteRequest(id="spin"), grpc.StatusCode.FAILED_PRECONDITION, "running"),
        ):
            with pytest.raises(grpc.RpcError) as failed:
                call(request, metadata=METADATA, timeout=10)
            assert failed.value.code() == code and text in failed.value.details()
        assert [p.pid for p in task.Pids(task_pb2.PidsRequest(id="spin"), metadata=METADATA).processes] == [
            task.Connect(task_pb2.ConnectRequest(id="spin"), metadata=METADATA).shim_pid
        ]
        task.CloseIO(task_pb2.CloseIORequest(id="spin", stdin=True), metadata=METADATA)
        # A running guest takes a new memory limit for its next growth (spin never grows).
        task.Update(
            task_pb2.UpdateTaskRequest(id="spin", resources=Any(value=b'{"memory":{"limit":1048576}}')), metadata=METADATA, timeout=10
        )
        assert task.Stats(task_pb2.StatsRequest(id="spin"), metadata=METADATA).stats.type_url == "io.containerd.cgroups.v2.Metrics"
        began = time.monotonic()
        task.Kill(task_pb2.KillRequest(id="spin", signal=9), metadata=METADATA, timeout=10)
        waited = task.Wait(task_pb2.WaitRequest(id="spin"), metadata=METADATA, timeout=10)
        elapsed = time.monotonic() - began
        print(f"Kill -> Wait answered in {elapsed * 1e3:.2f} ms")
        assert waited.exit_status == 137
        assert elapsed < 0.1
        with pytest.raises(grpc.RpcError) as gone:
            task.Kill(task_pb2.KillRequest(id="spin", signal=9), metadata=METADATA, timeout=10)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "already finished" in gone.value.details()
        assert task.Delete(task_pb2.DeleteRequest(id="spin"), metadata=METADATA).exit_status == 137


def test_created_guests_take_updates_kills_and_deletes_before_start(grpc_shim: Shim) -> None:
    """Create instantiates the guest: an Update before Start instantiates it again under the
    new limit, and a kill or delete before Start ends it without running it."""
    wasm = grpc_shim.tmp / "big.wasm"
    wasm.write_bytes(module('(memory (export "memory") 64) (func (export "_start") (call $exit (i32.const 7)))'))  # 4 MiB
    bundles = {task_id: grpc_shim.bundle(task_id, wasm) for task_id in ("small", "roomy", "killed", "deleted")}
    address = str(grpc_shim.start("small", bundles["small"])["address"])
    with grpc.insecure_channel(f"unix:{address}") as channel:
        task = task_pb2_grpc.TaskStub(channel)
        for task_id, bundle in bundles.items():
            task.Create(task_pb2.CreateTaskRequest(id=task_id, bundle=str(bundle)), metadata=METADATA, timeout=30)
        for task_id, limit, status in (("small", 1 << 20, 137), ("roomy", 8 << 20, 7)):
            resources = Any(value=json.dumps({"memory": {"limit": limit}}).encode())
            task.Update(task_pb2.UpdateTaskRequest(id=task_id, resources=resources), metadata=METADATA, timeout=10)
            task.Start(task_pb2.StartRequest(id=task_id), metadata=METADATA, timeout=10)
            assert task.Wait(task_pb2.WaitRequest(id=task_id), metadata=METADATA, timeout=10).exit_status == status
        task.Kill(task_pb2.KillRequest(id="killed", signal=15), metadata=METADATA, timeout=10)
        assert task.Wait(task_pb2.WaitRequest(id="killed"), metadata=METADATA, timeout=10).exit_status == 143
        with pytest.raises(grpc.RpcError) as refused:
            task.Start(task_pb2.StartRequest(id="killed"), metadata=METADATA, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "stopped" in refused.value.details()
        assert task.Delete(task_pb2.DeleteRequest(id="deleted"), metadata=METADATA, timeout=10).exit_status == 137
        for task_id in ("small", "roomy", "killed"):
            task.Delete(task_pb2.DeleteRequest(id=task_id), metadata=METADATA, timeout=10)


def test_delete_after_the_daemon_is_gone_reports_a_kill(grpc_shim: Shim) -> None:
    bundle = grpc_shim.bundle("gone", EXAMPLES / "hello" / "hello.wasm")
    result = grpc_shim.command("gone", "delete", bundle)
    assert result.returncode == 0, result.stderr.decode()
    response = task_pb2.DeleteResponse.FromString(result.stdout)
    assert response.exit_status == 137 and abs(response.exited_at.seconds - time.time()) < 60


def test_start_and_delete_import_neither_grpc_nor_the_engine(grpc_shim: Shim) -> None:
    first = grpc_shim.bundle("imports-1", EXAMPLES / "hello" / "hello.wasm")
    second = grpc_shim.bundle("imports-2", EXAMPLES / "hello" / "hello.wasm")
    runs = {
        "start (spawns the daemon)": grpc_shim.command("imports-1", "start", first, "-X", "importtime"),
        "start (reuses it)": grpc_shim.command("imports-2", "start", second, "-X", "importtime"),
        "delete": grpc_shim.command("imports-2", "delete", second, "-X", "importtime"),
    }
    for what, result in runs.items():
        assert result.returncode == 0, f"{what}: {result.stderr.decode()}"
        modules = imported(result.stderr)
        assert "wasm_oci.shim.main" in modules
        leaked = sorted(
            m
            for m in modules
            if m.split(".")[0] in FORBIDDEN_IN_START_AND_DELETE
            or m in FORBIDDEN_IN_START_AND_DELETE
            or any(m.startswith(f"{f}.") for f in FORBIDDEN_IN_START_AND_DELETE)
        )
        assert not leaked, f"{what} imported {leaked}"


def test_both_task_api_versions_are_served_over_ttrpc(tmp_path: Path, containerd: ContainerdServer) -> None:
    shim = Shim(tmp_path, containerd, "ttrpc")
    try:
        bundle = shim.bundle("versions", EXAMPLES / "hello" / "hello.wasm")
        bootstrap = shim.start("versions", bundle)
        assert bootstrap["protocol"] == "ttrpc" and str(bootstrap["address"]).startswith("unix:///")

        async def connect() -> tuple[int, int]:
            async with await TtrpcClient.connect(str(bootstrap["address"])) as client:
                v3 = await client.call(
                    "containerd.task.v3.Task",
                    "Connect",
                    task_pb2.ConnectRequest(id="versions"),
                    task_pb2.ConnectResponse,
                    metadata={"containerd-namespace": NAMESPACE},
                    timeout=10,
                )
                v2 = await client.call(
                    "containerd.task.v2.Task",
                    "Connect",
                    task_pb2.ConnectRequest(id="versions"),
                    task_pb2.ConnectResponse,
                    metadata={"containerd-namespace-ttrpc": NAMESPACE},
                    timeout=10,
                )
                return v3.shim_pid, v2.shim_pid

        v3_pid, v2_pid = asyncio.run(connect())
        assert v3_pid == v2_pid > 0
    finally:
        _kill_daemons(shim.run_dir)


def _executed(trace: Path) -> list[str]:
    """The programs an `strace -f -e trace=execve` log shows started (failed PATH probes left out)."""
    return [line.split('"')[1] for line in trace.read_text().splitlines() if " execve(" in line and line.rstrip().endswith("= 0")]


def _traced(
    shim: Shim, task_id: str, action: str, bundle: Path, stdin: bytes | None = None
) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    """`action` through the sh launcher under strace: the result and the programs it ran. stdin
    None: /dev/null, what containerd gives `start` when it has no runtime options."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    trace = shim.tmp / f"trace-{action}-{task_id}"
    argv = [strace, "-f", "-qq", "-e", "trace=execve", "-o", str(trace), str(shim.launcher)]
    argv += ["-namespace", NAMESPACE, "-address", str(shim.containerd.address), "-publish-binary", find_tool("containerd"), "-id", task_id]
    argv += ["-bundle", str(bundle), action] if action == "delete" else [action]
    given: dict[str, object] = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    result = subprocess.run(argv, cwd=bundle, env=shim.env(), capture_output=True, timeout=60, check=False, **given)
    return result, _executed(trace)


def _pythons(programs: list[str]) -> list[str]:
    return [program for program in programs if "python" in Path(program).name]


def _daemon_pid(bootstrap: dict[str, object]) -> int:
    return int(str(bootstrap["address"]).rsplit("task-", 1)[1].removesuffix(".sock"))


async def _run_to_deletion(address: str, task_id: str, bundle: Path) -> task_pb2.DeleteResponse:
    """Create, Start, Wait and Delete over ttrpc, as containerd does for `ctr run --rm`."""
    metadata = {"containerd-namespace": NAMESPACE}
    service = "containerd.task.v3.Task"
    async with await TtrpcClient.connect(address) as client:
        create = task_pb2.CreateTaskRequest(id=task_id, bundle=str(bundle), stdout=str(bundle / "stdout"))
        await client.call(service, "Create", create, task_pb2.CreateTaskResponse, metadata=metadata, timeout=30)
        await client.call(service, "Start", task_pb2.StartRequest(id=task_id), task_pb2.StartResponse, metadata=metadata, timeout=10)
        await client.call(service, "Wait", task_pb2.WaitRequest(id=task_id), task_pb2.WaitResponse, metadata=metadata, timeout=10)
        deleted = task_pb2.DeleteRequest(id=task_id)
        response: task_pb2.DeleteResponse = await client.call(
            service, "Delete", deleted, task_pb2.DeleteResponse, metadata=metadata, timeout=10
        )
        return response


def _group_dir(run_dir: Path) -> Path:
    (directory,) = [d for d in run_dir.iterdir() if d.is_dir()]
    return directory


def test_start_and_delete_run_no_python_while_the_daemon_serves(tmp_path: Path, containerd: ContainerdServer) -> None:
    shim = Shim(tmp_path, containerd, "ttrpc")
    hello = EXAMPLES / "hello" / "hello.wasm"
    try:
        first = shim.start("fast-1", shim.bundle("fast-1", hello))  # Python: spawns the daemon
        bundle = shim.bundle("fast-2", hello)
        started, programs = _traced(shim, "fast-2", "start", bundle)
        assert started.returncode == 0, started.stderr.decode()
        assert started.stdout == f'{{"version":3,"address":"{first["address"]}","protocol":"ttrpc"}}'.encode()
        assert [Path(program).name for program in programs] == [shim.launcher.name, "cat"], programs
        # Options on a pipe, even none, are read whole (od) before they are compared.
        piped, programs = _traced(shim, "fast-3", "start", shim.bundle("fast-3", hello), stdin=b"")
        assert piped.stdout == started.stdout and [Path(program).name for program in programs] == [shim.launcher.name, "cat", "od"]
        reservation = _group_dir(shim.run_dir) / "reserved" / f"{NAMESPACE}@fast-2"
        assert reservation.exists()
        response = asyncio.run(_run_to_deletion(str(first["address"]), "fast-2", bundle))
        assert not reservation.exists()  # Create turned it into the task
        assert (bundle / "stdout").read_text().startswith("Hello from wasm-oci!")
        deleted, programs = _traced(shim, "fast-2", "delete", bundle)
        assert deleted.returncode == 0, deleted.stderr.decode()
        assert programs == [str(shim.launcher)], programs  # shell builtins only: not even cat(1)
        assert deleted.stdout == response.SerializeToString()
        answer = task_pb2.DeleteResponse.FromString(deleted.stdout)
        assert answer.exit_status == 0 and answer.pid == _daemon_pid(first)  # the real exit, not 137
        # The same DeleteResponse when Python answers (it handed over, or was run directly).
        assert shim.command("fast-2", "delete", bundle, "-X", "utf8").stdout == deleted.stdout
    finally:
        _kill_daemons(shim.run_dir)


def test_the_launcher_hands_over_to_python_when_it_cannot_prove_the_answer(tmp_path: Path, containerd: ContainerdServer) -> None:
    shim = Shim(tmp_path, containerd, "ttrpc")
    hello = EXAMPLES / "hello" / "hello.wasm"
    try:
        first = shim.start("slow-1", shim.bundle("slow-1", hello))
        group_dir = _group_dir(shim.run_dir)
        # Runtime options the route was not written for: Python gets them whole (the same
        # configuration text as the file's, so the same group and daemon).
        body = shim.config.read_text().encode()
        options = Any(type_url="runtimeoptions.v1.Options", value=field_bytes(3, body)).SerializeToString()  # Options{config_body}
        with_options, programs = _traced(shim, "slow-2", "start", shim.bundle("slow-2", hello), stdin=options)
        assert with_options.returncode == 0, with_options.stderr.decode()
        assert _pythons(programs) and json.loads(with_options.stdout) == first
        # A closed door (a daemon leaving, as far as sh can tell): Python asks the daemon itself.
        (group_dir / "open").unlink()
        closed, programs = _traced(shim, "slow-3", "start", shim.bundle("slow-3", hello))
        assert closed.returncode == 0 and _pythons(programs) and json.loads(closed.stdout) == first
        assert not (group_dir / "reserved" / f"{NAMESPACE}@slow-3").exists()
        # A SIGKILLed daemon whose door is still open: sh sees the pid gone, Python spawns anew.
        shim.start("slow-4", shim.bundle("slow-4", hello))  # nothing reopened the door: still Python
        os.kill(_daemon_pid(first), signal.SIGKILL)
        text = f'{_daemon_pid(first)} 1\n"address":"unix:///nowhere","protocol":"ttrpc"}}\n'
        (group_dir / "open").write_text(text)
        time.sleep(0.1)
        bundle = shim.bundle("slow-5", hello)
        respawned = shim.command("slow-5", "start", bundle)  # not traced: strace -f would wait for the new daemon
        assert respawned.returncode == 0, respawned.stderr.decode()
        assert json.loads(respawned.stdout)["address"] != first["address"]
        assert (group_dir / "open").read_text() != text  # the new daemon's door
        # No record of a Delete RPC: Python asks the daemon, which stops and forgets the task.
        deleted, programs = _traced(shim, "slow-5", "delete", bundle)
        assert deleted.returncode == 0 and _pythons(programs)
        assert task_pb2.DeleteResponse.FromString(deleted.stdout).exit_status == 137
    finally:
        _kill_daemons(shim.run_dir)


def test_a_leaving_daemon_stays_for_a_reservation_sh_took(tmp_path: Path, containerd: ContainerdServer) -> None:
    """linger = 0: the daemon tries to leave a second after its last task is gone, and must not
    while sh holds a reservation in its door; a reservation older than the TTL does not count."""
    shim = Shim(tmp_path, containerd, "ttrpc")
    hello = EXAMPLES / "hello" / "hello.wasm"
    try:
        bundles = {task_id: shim.bundle(task_id, hello) for task_id in ("leave-1", "leave-2", "leave-3")}
        with ThreadPool(3) as pool:  # concurrent starts of a new group: one daemon
            answers = pool.map(lambda task_id: shim.start(task_id, bundles[task_id]), list(bundles))
        assert len({json.dumps(answer) for answer in answers}) == 1
        pid = _daemon_pid(answers[0])
        group_dir = _group_dir(shim.run_dir)
        reserved = group_dir / "reserved"
        (reserved / f"{NAMESPACE}@ghost").write_text("")
        (reserved / f"{NAMESPACE}@stale").write_text("")
        os.utime(reserved / f"{NAMESPACE}@stale", (time.time() - 120, time.time() - 120))
        for task_id, bundle in bundles.items():
            assert shim.command(task_id, "delete", bundle).returncode == 0  # reservations never created
        time.sleep(2.5)
        assert Path(f"/proc/{pid}").exists() and (group_dir / "open").exists()
        assert not (reserved / f"{NAMESPACE}@stale").exists()
        ghost = shim.bundle("ghost", hello)
        (ghost / "wasm-oci-control").write_text(str(group_dir / "control.sock"))  # as sh's start leaves it
        assert shim.command("ghost", "delete", ghost).returncode == 0  # releases the reservation
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the daemon did not leave"
            time.sleep(0.05)
        assert not (group_dir / "open").exists() and not (group_dir / "control.sock").exists()
        started = shim.command("after", "start", shim.bundle("after", hello))
        assert started.returncode == 0 and _daemon_pid(json.loads(started.stdout)) != pid
    finally:
        _kill_daemons(shim.run_dir)
