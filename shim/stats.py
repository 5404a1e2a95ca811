"""Task metrics in the shape containerd's clients decode: a cgroups v2 `Metrics` message
(`io.containerd.cgroups.v2.Metrics`, what `ctr task metrics` and CRI accept), encoded with
wire.py rather than a vendored cgroups .proto for a few fields.

What is known of an in-process guest: whether it runs (pids.current), the CPU time of the
thread it runs on (cpu.usage_usec: the kernel's per-thread clock, what its cgroup counts too),
and what its linear memories hold in RAM now (memory.usage and anon: the pages it touched) and
the most they ever committed (max_usage; engine/memory.py allocates them) against its limit
(usage_limit). CRI's working set is usage less inactive
file pages, of which a guest has none.
"""

from __future__ import annotations

from google.protobuf.any_pb2 import Any

from wasm_oci.shim import wire

TYPE_URL = "io.containerd.cgroups.v2.Metrics"
# Field numbers of github.com/containerd/cgroups cgroup2/stats/metrics.proto.
_PIDS, _CPU, _MEMORY = 1, 2, 4
_PIDS_CURRENT, _PIDS_LIMIT = 1, 2
_CPU_USAGE_USEC = 1
_MEMORY_ANON, _MEMORY_USAGE, _MEMORY_USAGE_LIMIT, _MEMORY_MAX_USAGE = 1, 32, 33, 36


def metrics(running: bool, cpu_ns: int, memory_used: int, memory_peak: int, memory_limit: int | None) -> Any:
    pids = wire.field_varint(_PIDS_CURRENT, int(running)) + wire.field_varint(_PIDS_LIMIT, 1)
    cpu = wire.field_varint(_CPU_USAGE_USEC, cpu_ns // 1000)
    memory = (
        wire.field_varint(_MEMORY_ANON, memory_used)
        + wire.field_varint(_MEMORY_USAGE, memory_used)
        + wire.field_varint(_MEMORY_USAGE_LIMIT, memory_limit or 0)
        + wire.field_varint(_MEMORY_MAX_USAGE, memory_peak)
    )
    value = wire.field_bytes(_PIDS, pids) + wire.field_bytes(_CPU, cpu) + wire.field_bytes(_MEMORY, memory)
    return Any(type_url=TYPE_URL, value=value)
