"""tinyproxy (Debian bookworm) as the HTTP forward proxy between the CLI and a registry.

It logs each request line (`GET http://...` for a proxied plain-HTTP request, `CONNECT host:port`
for a TLS tunnel), which the tests read to see what went through it.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from services.process import free_port, spawn, stop_process, tail, wait_until
from services.tools import find_tool


class ForwardProxy:
    def __init__(self, workdir: Path, connect_ports: tuple[int, ...] = (), credentials: tuple[str, str] | None = None) -> None:
        self.workdir, self.connect_ports, self.credentials = workdir, connect_ports, credentials
        self.port = 0
        self.log_path = workdir / "tinyproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        user = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"http://{user}127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 64",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
            "LogLevel Info",
            f'LogFile "{self.log_path}"',
            *(f"ConnectPort {port}" for port in self.connect_ports),
        ]
        if self.credentials:
            lines.append(f"BasicAuth {self.credentials[0]} {self.credentials[1]}")
        config = self.workdir / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        self._proc = spawn([find_tool("tinyproxy"), "-d", "-c", str(config)], self.workdir / "stdout.log")
        wait_until(self._listening, timeout=10, what="tinyproxy", proc=self._proc, log_path=self.log_path)
        return self

    def _listening(self) -> bool | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return None

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged so far, e.g. `GET http://127.0.0.1:5000/v2/ HTTP/1.1`."""
        found = []
        for line in tail(self.log_path, 10_000_000).splitlines():
            _, marker, request = line.partition("Request (file descriptor ")
            if marker:
                found.append(request.split("): ", 1)[1])
        return found

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
