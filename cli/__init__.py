"""The `wasm-oci` command line: a thin click layer over the library."""
