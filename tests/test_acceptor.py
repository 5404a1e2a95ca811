"""The shim's shared accept loop (engine/acceptor.py) when the process runs out of descriptors:
it must neither spin nor lose the queued connection."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, resource, socket, socketserver, threading, time
    from wasm_oci.engine.acceptor import Acceptor

    accepted = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            accepted.set()

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    server, acceptor = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler), Acceptor()
    acceptor.add(server)
    client = socket.socket()
    spare = []
    try:
        while True:
            spare.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    client.connect(server.server_address)
    cpu = time.process_time()
    time.sleep(1)
    print(f"{time.process_time() - cpu:.3f} {accepted.is_set()}")
    for fd in spare:
        os.close(fd)
    print(accepted.wait(5))
    """
)


def test_out_of_descriptors_the_loop_rests_and_accepts_once_some_are_free() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    busy, first, after = result.stdout.split()
    assert float(busy) < 0.3, f"the accept loop used {busy} s of CPU in 1 s while out of descriptors"
    assert (first, after) == ("False", "True")
    assert "Too many open files; trying again every" in result.stderr
