"""wasm-oci: package, sign, distribute and run WebAssembly components as OCI artifacts."""

__version__ = "0.1.0"
