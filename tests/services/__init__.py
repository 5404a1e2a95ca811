"""Real services (registry, token server, containerd) started on loopback for tests.

Nothing here installs anything: binaries come from tests/tools/install-system-deps.sh.
"""
