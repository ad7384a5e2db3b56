"""``moto_server`` as a real HTTP endpoint for tests: AWS (S3, SES, SNS, SQS) on 127.0.0.1.

One subprocess per server, on a free loopback port, started and waited for here. Plugin
test kits subclass :class:`MotoServer` with what their service needs (buckets, identities).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["MotoServer"]

#: No proxy, whatever the environment says: the server is on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class MotoServer:
    """``moto_server`` in a subprocess of its own, on a free port of 127.0.0.1."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"moto_server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                self._get("/moto-api/data.json")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("moto_server did not answer within 30 s") from None
                time.sleep(0.1)

    def _get(self, path: str) -> bytes:
        with _HTTP.open(self.url + path, timeout=5) as answer:
            data: bytes = answer.read()
            return data

    def stop(self) -> None:
        """Stop the server and close its log."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def reset(self) -> None:
        """Forget everything every service holds: a fresh AWS for the next test."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with _HTTP.open(request, timeout=5) as answer:
            answer.read()
