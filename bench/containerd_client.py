"""A small client of containerd's gRPC API, enough to run a task to completion without `ctr`.

`ctr run --rm` is a Go process per task (start-up, image and snapshot lookups, FIFOs) whose cost
is alike for every runtime and hides the runtime's own. runwasi's stress test drives containerd
directly instead; this does the same calls on the protos in proto/:
Snapshots.Prepare (skipped for an image without layers: a Wasm image of ours has none, and the
shim needs no rootfs), Containers.Create, Tasks.Create/Start/Wait/Delete, Containers.Delete,
Snapshots.Remove. Stdio is null (empty FIFO paths), as `ctr run --null-io` sends it.

One client (one HTTP/2 channel) is shared by all threads, as one Go client would be.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, empty_pb2

from wasm_oci.proto import (
    containers_create_pb2,
    containers_pb2,
    content_pb2,
    content_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    types_pb2,
)

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
SNAPSHOTTER = "overlayfs"
_CONTAINERS = "/containerd.services.containers.v1.Containers/"
_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass(frozen=True)
class Image:
    """What a task of an image needs: its name, the chain ID of its layers ("" without layers),
    and the argv and environment of its config."""

    name: str
    chain_id: str
    args: list[str]
    env: list[str]


def chain_id(diff_ids: list[str]) -> str:
    """The OCI image spec's ChainID: the key of the snapshot an image's layers unpack to."""
    chain = ""
    for diff_id in diff_ids:
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


class Client:
    def __init__(self, address: Path, namespace: str, base_spec: dict[str, Any]) -> None:
        """`base_spec`: the default runtime spec (`ctr oci spec`), which each task's copies."""
        self.channel = grpc.insecure_channel(f"unix://{address}")
        self.namespace = namespace
        self.metadata = (("containerd-namespace", namespace),)
        self.base_spec = base_spec
        self.tasks = tasks_pb2_grpc.TasksStub(self.channel)
        self.snapshots = snapshots_pb2_grpc.SnapshotsStub(self.channel)
        self.images = images_pb2_grpc.ImagesStub(self.channel)
        self.content = content_pb2_grpc.ContentStub(self.channel)
        # The Containers service is declared in containers.proto with Get only (what the shim
        # calls); Create and Delete are called by path with the messages of containers_create.proto.
        self._create_container = self.channel.unary_unary(
            _CONTAINERS + "Create",
            request_serializer=containers_create_pb2.CreateContainerRequest.SerializeToString,
            response_deserializer=containers_create_pb2.CreateContainerResponse.FromString,
        )
        self._delete_container = self.channel.unary_unary(
            _CONTAINERS + "Delete",
            request_serializer=containers_create_pb2.DeleteContainerRequest.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )

    def close(self) -> None:
        self.channel.close()

    def _read(self, digest: str) -> bytes:
        request = content_pb2.ReadContentRequest(digest=digest)
        return b"".join(chunk.data for chunk in self.content.Read(request, metadata=self.metadata))

    def image(self, name: str) -> Image:
        """An image already pulled (and, with layers, unpacked) into this namespace."""
        target = self.images.Get(images_pb2.GetImageRequest(name=name), metadata=self.metadata).image.target
        manifest = json.loads(self._read(target.digest))
        if target.media_type in _INDEXES or "manifests" in manifest:
            linux = [m for m in manifest["manifests"] if m.get("platform", {}).get("os", "linux") == "linux"]
            manifest = json.loads(self._read(linux[0]["digest"]))
        config = json.loads(self._read(manifest["config"]["digest"]))
        process = config.get("config") or {}
        args = (process.get("Entrypoint") or []) + (process.get("Cmd") or [])
        return Image(name, chain_id(config.get("rootfs", {}).get("diff_ids", [])), args, process.get("Env") or [])

    def _spec(self, task_id: str, image: Image) -> any_pb2.Any:
        spec = json.loads(json.dumps(self.base_spec))
        spec["process"]["args"] = image.args
        spec["process"]["env"] = image.env or spec["process"].get("env", [])
        spec["process"]["terminal"] = False
        spec["root"] = {"path": "rootfs"}
        spec.setdefault("linux", {})["cgroupsPath"] = f"/{self.namespace}/{task_id}"  # where ctr puts it
        return any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(spec).encode())

    def run(self, task_id: str, image: Image, runtime: str) -> int:
        """One task from creation to deletion; its exit status. Cleans up what it created."""
        md = self.metadata
        mounts: list[types_pb2.Mount] = []
        if image.chain_id:
            prepare = snapshots_pb2.PrepareSnapshotRequest(
                snapshotter=SNAPSHOTTER,
                key=task_id,
                parent=image.chain_id,
                labels={"containerd.io/gc.root": "bench"},  # not collected before the container refers to it
            )
            mounts = list(self.snapshots.Prepare(prepare, metadata=md).mounts)
        try:
            container = containers_pb2.Container(
                id=task_id,
                image=image.name,
                runtime=containers_pb2.Container.Runtime(name=runtime),
                spec=self._spec(task_id, image),
                snapshotter=SNAPSHOTTER if image.chain_id else "",
                snapshot_key=task_id if image.chain_id else "",
            )
            self._create_container(containers_create_pb2.CreateContainerRequest(container=container), metadata=md)
            try:
                self.tasks.Create(tasks_pb2.CreateTaskRequest(container_id=task_id, rootfs=mounts), metadata=md)
                try:
                    self.tasks.Start(tasks_pb2.StartRequest(container_id=task_id), metadata=md)
                    status = self.tasks.Wait(tasks_pb2.WaitRequest(container_id=task_id), metadata=md).exit_status
                finally:
                    self.tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=task_id), metadata=md)
            finally:
                self._delete_container(containers_create_pb2.DeleteContainerRequest(id=task_id), metadata=md)
        finally:
            if image.chain_id:
                self.snapshots.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=SNAPSHOTTER, key=task_id), metadata=md)
        return status
