"""The containerd runtime shim `containerd-shim-wasm-oci-v1` (task API v3 over ttrpc and gRPC)."""
