"""wasm-oci's own .proto definitions of the containerd API it speaks, and their generated code."""
