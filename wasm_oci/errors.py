"""The project's exception hierarchy.

Every failure a user can cause or meet maps to one class here, and each class carries the
CLI exit code and the gRPC status code (by name, so this module never imports grpc) that
report it. Anything else escaping is a bug and is shown with a traceback.
"""

from __future__ import annotations

GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
"""gRPC status code numbers by name (google.rpc.Code): the names `grpc_code` attributes use."""


class WasmOciError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code: int = 1
    grpc_code: str = "UNKNOWN"


class UsageError(WasmOciError):
    """A command line, option or environment setting that cannot be used (as click's usage errors)."""

    exit_code = 2
    grpc_code = "INVALID_ARGUMENT"


class InvalidReference(WasmOciError):
    """A reference string that is neither a registry nor a layout reference."""

    exit_code = 3
    grpc_code = "INVALID_ARGUMENT"


class InvalidWasm(WasmOciError):
    """Input that is not a valid WebAssembly module or component."""

    exit_code = 4
    grpc_code = "INVALID_ARGUMENT"


class NotFound(WasmOciError):
    """A tag, manifest, blob or file that does not exist."""

    exit_code = 5
    grpc_code = "NOT_FOUND"


class DigestMismatch(WasmOciError):
    """Content whose digest or size differs from what its descriptor promised."""

    exit_code = 6
    grpc_code = "DATA_LOSS"


class AuthenticationError(WasmOciError):
    """The registry refused the credentials (or there were none)."""

    exit_code = 7
    grpc_code = "UNAUTHENTICATED"


class RegistryUnreachable(WasmOciError):
    """No connection could be made to the registry (DNS, refused, TLS, timeout)."""

    exit_code = 8
    grpc_code = "UNAVAILABLE"


class RegistryError(WasmOciError):
    """The registry answered, but not as the distribution spec says it should."""

    exit_code = 9
    grpc_code = "INTERNAL"


class UnsupportedArtifact(WasmOciError):
    """An OCI object that is not a Wasm artifact this project knows how to read."""

    exit_code = 10
    grpc_code = "FAILED_PRECONDITION"


class MalformedContent(WasmOciError):
    """A document from outside (manifest, index, config, referrers list, token or error
    response, layout index) that is not the shape the spec gives it, or is over its size cap."""

    exit_code = 14
    grpc_code = "FAILED_PRECONDITION"


class StoreError(WasmOciError):
    """The local store or an output path cannot be written or read."""

    exit_code = 12
    grpc_code = "INTERNAL"


class SignatureError(WasmOciError):
    """An artifact whose signatures do not satisfy what was required (unsigned, other key, other digest, tampered)."""

    exit_code = 11
    grpc_code = "PERMISSION_DENIED"


class TrustConfigError(WasmOciError):
    """A signing key, public key or trust-policy file that cannot be used (unreadable, malformed, wrong password)."""

    exit_code = 13
    grpc_code = "FAILED_PRECONDITION"


class KeyPasswordRequired(TrustConfigError):
    """An encrypted private key and no password to open it; the CLI prompts when it can."""


class ListenError(WasmOciError):
    """The HTTP trigger cannot listen on its address (in use, not permitted, not an address here)."""

    exit_code = 15
    grpc_code = "UNAVAILABLE"


class RpcError(WasmOciError):
    """A failure with an explicit status code name: raised by shim handlers for codes the
    classes here do not carry (ALREADY_EXISTS, UNIMPLEMENTED...), and by RPC clients for a
    non-OK response."""

    def __init__(self, code: str, message: str) -> None:
        if code not in GRPC_CODES or code == "OK":
            raise ValueError(f"not an error status code: {code!r}")
        super().__init__(message)
        self.grpc_code = code


class ShimConfigError(WasmOciError):
    """A shim configuration (shim.toml, runtime options) that cannot be used; `ctr run` shows the message."""

    exit_code = 2
    grpc_code = "FAILED_PRECONDITION"


class DaemonError(WasmOciError):
    """The shim daemon could not be started; `ctr run` shows the message."""

    grpc_code = "INTERNAL"


class MountError(WasmOciError):
    """A rootfs mount that failed; the message names the mount and the errno."""

    grpc_code = "INTERNAL"


class CgroupError(WasmOciError):
    """A cgroup the spec names could not be set up; the message names the file."""

    grpc_code = "FAILED_PRECONDITION"


class UnsatisfiedImport(WasmOciError):
    """A guest that imports something this host does not provide; the message names the import."""

    exit_code = 20
    grpc_code = "FAILED_PRECONDITION"


class NoEntryPoint(WasmOciError):
    """A guest with nothing to run: a component without `wasi:cli/run`, a module without `_start`."""

    exit_code = 21
    grpc_code = "FAILED_PRECONDITION"
