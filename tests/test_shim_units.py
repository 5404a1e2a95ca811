"""The shim's pure parts: command line, hand-made protobuf, configuration, grouping, specs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wasm_oci.errors import RpcError, ShimConfigError, UsageError
from wasm_oci.proto import task_pb2
from wasm_oci.shim import cgroups, config, control, group, runtime_spec, wire
from wasm_oci.shim.flags import parse
from wasm_oci.shim.guest import resolve_in
from wasm_oci.shim.launcher import write as write_launcher


def test_flags_follow_go_flag_syntax() -> None:
    flags = parse(["-namespace", "k8s.io", "--address=/run/c.sock", "-publish-binary", "/bin/containerd", "-id", "abc", "-debug", "start"])
    assert (flags.namespace, flags.address, flags.publish_binary, flags.id, flags.debug, flags.action) == (
        "k8s.io",
        "/run/c.sock",
        "/bin/containerd",
        "abc",
        True,
        "start",
    )
    assert parse([*flags.argv(), "delete"]).id == "abc"
    for bad, message in (
        (["-nope", "x"], "not defined"),
        (["-id"], "needs an argument"),
        (["start", "x"], "unexpected"),
        (["stop"], "unknown action"),
    ):
        with pytest.raises(UsageError, match=message):
            parse(bad)


def test_delete_response_matches_protobuf() -> None:
    encoded = wire.delete_response(4242, 137, 1_700_000_000_123_456_789)
    decoded = task_pb2.DeleteResponse.FromString(encoded)
    assert (decoded.pid, decoded.exit_status, decoded.exited_at.seconds, decoded.exited_at.nanos) == (4242, 137, 1_700_000_000, 123_456_789)
    assert task_pb2.DeleteResponse.FromString(wire.delete_response(0, 0, 0)) == task_pb2.DeleteResponse()


def test_runtime_options_carry_the_config_path_or_body() -> None:
    # What containerd writes on `start`'s stdin for `ctr run --runtime-config-path /tmp/cfg.toml`.
    seen = bytes.fromhex("0a1972756e74696d656f7074696f6e732e76312e4f7074696f6e73120f120d2f746d702f6366672e746f6d6c")
    assert config.runtime_options(seen) == ("/tmp/cfg.toml", "")
    body = wire.field_bytes(1, b"runtimeoptions.v1.Options") + wire.field_bytes(2, wire.field_bytes(3, b'group = "task"'))
    assert config.runtime_options(body) == ("", 'group = "task"')
    assert config.runtime_options(wire.field_bytes(1, b"containerd.runc.v1.Options")) == ("", "")
    with pytest.raises(ShimConfigError):
        config.runtime_options(b"\x0a\xff")


def test_config_is_checked_key_by_key() -> None:
    parsed = config.parse('group = "pod"\nprotocol = "grpc"\nlinger = 2\nplain_http = ["127.0.0.1:5000"]\n', "t.toml")
    assert (parsed.group, parsed.protocol, parsed.linger, parsed.plain_http) == ("pod", "grpc", 2.0, ("127.0.0.1:5000",))
    for text, message in (
        ('group = "node"', "group must be one of"),
        ("linger = -1", "linger"),
        ('policy = "rel"', "absolute"),
        ("colour = 1", "unknown key"),
        ("group = ", "not valid TOML"),
    ):
        with pytest.raises(ShimConfigError, match=message):
            config.parse(text, "t.toml")


def test_groups_name_what_tasks_share() -> None:
    spec = b'{"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"f00d"}}'
    assert group.sandbox_id(spec) == "f00d"
    assert group.sandbox_id(b'{"annotations": {"io.kubernetes.cri.sandbox-id" : "beef"}}') == "beef"
    assert group.sandbox_id(b'{"process":{"env":["X=\\"io.kubernetes.cri.sandbox-id\\":\\"no\\""]}}') == ""
    auto, per_pod, per_task = config.ShimConfig(), config.parse('group = "pod"', "t"), config.parse('group = "task"', "t")
    assert group.name(auto, "k8s.io", "c1", spec) == "pod/k8s.io/f00d"
    assert group.name(auto, "default", "c1", b"{}") == "namespace/default"
    assert group.name(per_pod, "default", "c1", b"{}") == "task/default/c1"
    assert group.name(per_task, "k8s.io", "c1", spec) == "task/k8s.io/c1"
    directory = group.directory(auto, "/run/containerd/containerd.sock", "namespace/default")
    assert directory != group.directory(per_task, "/run/containerd/containerd.sock", "namespace/default")
    assert len(directory) + len("/task-4194304.sock") < 108


def test_spec_grants_only_bind_mount_directories(tmp_path: Path) -> None:
    spec = runtime_spec.parse(
        {
            "process": {"args": ["/app.wasm", "x"], "env": ["A=1", "B=2=3"], "cwd": "/work"},
            "root": {"path": "rootfs", "readonly": True},
            "linux": {"resources": {"memory": {"limit": 1 << 20}}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": str(tmp_path), "options": ["rbind", "ro"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind"]},
            ],
        },
        "config.json",
    )
    assert spec.args == ("/app.wasm", "x") and spec.env == {"A": "1", "B": "2=3"} and spec.cwd == "/work"
    assert spec.root_readonly and spec.memory_limit == 1 << 20
    assert [(p.host, p.guest, p.read_only) for p in spec.binds] == [(tmp_path, "/data", True)]
    assert runtime_spec.memory_limit({"memory": {"limit": -1}}) is None
    with pytest.raises(RpcError, match="nothing to run"):
        runtime_spec.parse({"process": {"args": []}}, "config.json")


def test_entrypoints_resolve_inside_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "app.wasm").write_bytes(b"\0asm")
    os.symlink("/app.wasm", root / "bin" / "abs.wasm")
    os.symlink("../app.wasm", root / "bin" / "rel.wasm")
    os.symlink("/etc/passwd", root / "bin" / "escape.wasm")
    assert resolve_in(root, "/bin/abs.wasm") == root / "app.wasm"
    assert resolve_in(root, "bin/rel.wasm") == root / "app.wasm"
    assert resolve_in(root, "/../../app.wasm") == root / "app.wasm"
    assert resolve_in(root, "/bin/escape.wasm") is None  # /etc/passwd of the rootfs, which has none
    assert resolve_in(root, "/missing.wasm") is None


def test_the_containerd_examples_are_valid() -> None:
    import tomllib

    examples = Path(__file__).resolve().parents[1] / "examples" / "containerd"
    shim_config = config.parse((examples / "shim.toml").read_text(), "shim.toml")
    assert (shim_config.group, shim_config.protocol, shim_config.policy) == ("auto", "ttrpc", "/etc/wasm-oci/policy.json")
    for name, plugin in (
        ("containerd-config.toml", "io.containerd.cri.v1.runtime"),
        ("containerd-config-1.7.toml", "io.containerd.grpc.v1.cri"),
    ):
        runtime = tomllib.loads((examples / name).read_text())["plugins"][plugin]["containerd"]["runtimes"]["wasm-oci"]
        assert runtime["runtime_type"] == "io.containerd.wasm-oci.v1"
        assert runtime["options"]["ConfigPath"] == "/etc/wasm-oci/shim.toml"
    assert "handler: wasm-oci" in (examples / "runtimeclass.yaml").read_text()


@pytest.mark.parametrize(
    ("path", "expanded"),
    [
        ("/kubepods/burstable/pod1234/abcd", "/kubepods/burstable/pod1234/abcd"),
        ("k8s.io/abcd", "/k8s.io/abcd"),
        (
            "kubepods-burstable-pod1234.slice:cri-containerd:abcd",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abcd.scope",
        ),
        ("system.slice:docker:abcd", "/system.slice/docker-abcd.scope"),
        ("-.slice:run:x", "/run-x.scope"),
    ],
)
def test_cgroups_paths_of_both_drivers(path: str, expanded: str) -> None:
    assert cgroups.expand(path) == expanded


def test_cpu_limits_and_cgroups_path_come_from_the_spec() -> None:
    spec = runtime_spec.parse(
        {
            "process": {"args": ["/app.wasm"]},
            "linux": {
                "cgroupsPath": "/kubepods/pod1/c1",
                "resources": {
                    "cpu": {"shares": 102, "quota": 10000, "period": 100000, "cpus": "0", "mems": "0"},
                    "memory": {"limit": 64 << 20},
                },
            },
        },
        "config.json",
    )
    assert (spec.cgroups_path, spec.memory_limit) == ("/kubepods/pod1/c1", 64 << 20)
    assert spec.cpu == cgroups.CpuLimits(102, 10000, 100000, "0", "0") and spec.cpu.enforce
    assert not cgroups.CpuLimits(shares=1024).enforce and cgroups.CpuLimits(shares=2).enforce
    odd = runtime_spec.parse(
        {
            "process": {"args": ["/app.wasm"]},
            "linux": {"resources": {"cpu": {"shares": "lots", "quota": -1, "period": True, "cpus": 7}, "memory": {"limit": -1}}},
        },
        "config.json",
    )
    assert (odd.cpu, odd.cpu.enforce, odd.memory_limit, odd.cgroups_path) == (cgroups.CpuLimits(), False, None, "")


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_the_sh_launcher_prints_the_deleted_record_back_to_every_byte(shell: str, tmp_path: Path) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed")
    launcher = write_launcher(tmp_path / "bin")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    argv = [path, str(launcher), "-namespace", "default", "-id", "t1", "-bundle", str(bundle), "delete"]
    for data in (bytes(range(256)), b"", b"%s%n\\\n\x00", task_pb2.DeleteResponse(pid=7, exit_status=137).SerializeToString()):
        record = control.printable(data)
        assert control.unprintable(record) == data
        (bundle / control.DELETED_RECORD).write_bytes(record)
        printed = subprocess.run(argv, capture_output=True, timeout=10, check=True)
        assert printed.stdout == data
    for broken in (b"\\12", b"x\\101\n", b"\\1011\n"):
        with pytest.raises(ValueError):
            control.unprintable(broken)
