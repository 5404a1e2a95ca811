"""OCI distribution: references, content stores (local layout, remote registry), packaging and copy."""
