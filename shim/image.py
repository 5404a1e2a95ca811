"""containerd's own services on its main gRPC socket: which image a container runs, and that
image's content, read the way containerd stores it (containers.v1 Get -> images.v1 Get ->
content.v1 Read).

The content store is exposed as a read-only `Target`, so `wasm_oci.oci.artifact.read` walks
index -> manifest -> wasm layer exactly as it does for registries and layouts. grpc is
imported on first use: a daemon whose guests all come from their rootfs never loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from wasm_oci.errors import NotFound, RpcError
from wasm_oci.oci.descriptor import Descriptor

if TYPE_CHECKING:
    import grpc

CALL_TIMEOUT = 30.0


def _failure(exc: grpc.RpcError, what: str) -> Exception:
    import grpc

    code = exc.code()
    detail = f"{what}: {exc.details()}"
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(detail)
    return RpcError(code.name if code.name != "OK" else "UNKNOWN", f"containerd: {detail}")


class ContentTarget:
    """containerd's content store in one namespace, as a `ReadOnlyTarget`: the shim reads
    images, it never writes them."""

    def __init__(self, containerd: Containerd, namespace: str) -> None:
        self._containerd, self._namespace = containerd, namespace

    def exists(self, desc: Descriptor) -> bool:
        return True  # only asked about what an image already names

    @contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        yield self._containerd.read(self._namespace, desc.digest)


class Containerd:
    """A client of containerd's containers, images and content services."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._stubs: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _stub(self, name: str) -> Any:
        with self._lock:
            if self._stubs is None:
                import grpc

                from wasm_oci.proto import containers_pb2_grpc, content_pb2_grpc, images_pb2_grpc

                channel = grpc.insecure_channel(f"unix:{self._address}")
                self._stubs = {
                    "containers": containers_pb2_grpc.ContainersStub(channel),  # type: ignore[no-untyped-call]
                    "images": images_pb2_grpc.ImagesStub(channel),  # type: ignore[no-untyped-call]
                    "content": content_pb2_grpc.ContentStub(channel),  # type: ignore[no-untyped-call]
                }
            return self._stubs[name]

    @staticmethod
    def _metadata(namespace: str) -> tuple[tuple[str, str]]:
        return (("containerd-namespace", namespace),)

    def _unary(self, service: str, method: str, request: Any, namespace: str, what: str) -> Any:
        import grpc

        try:
            return getattr(self._stub(service), method)(request, metadata=self._metadata(namespace), timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            raise _failure(exc, what) from None

    def image_of(self, namespace: str, container_id: str) -> str:
        """The image name the container was created from ("" for none)."""
        from wasm_oci.proto import containers_pb2

        request = containers_pb2.GetContainerRequest(id=container_id)
        return str(self._unary("containers", "Get", request, namespace, f"container {container_id}").container.image)

    def target_of(self, namespace: str, image: str) -> Descriptor:
        """What the image name points at: a manifest or an index."""
        from wasm_oci.proto import images_pb2

        target = self._unary("images", "Get", images_pb2.GetImageRequest(name=image), namespace, f"image {image}").image.target
        return Descriptor(target.media_type, target.digest, target.size, dict(target.annotations))

    def read(self, namespace: str, digest: str) -> Iterator[bytes]:
        """A blob's bytes as containerd streams them (unverified: see digest.verified)."""
        import grpc

        from wasm_oci.proto import content_pb2

        stream = self._stub("content").Read(
            content_pb2.ReadContentRequest(digest=digest), metadata=self._metadata(namespace), timeout=CALL_TIMEOUT
        )
        try:
            for chunk in stream:
                yield chunk.data
        except grpc.RpcError as exc:
            raise _failure(exc, f"content {digest}") from None

    def content(self, namespace: str) -> ContentTarget:
        return ContentTarget(self, namespace)
