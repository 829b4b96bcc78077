"""S3 on loopback for tests and benchmarks: moto's server on 127.0.0.1, and a TCP relay that can cut it off.

Nothing here reaches AWS: :func:`offline_aws_env` gives dummy credentials, a region and no instance metadata,
and every client is pointed at ``http://127.0.0.1:PORT`` through the connection's ``endpoint_url`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from testkit import AIRFLOW_V3
from testkit.loopback import LoopbackServer

REGION = "us-east-1"
#: Dummy credentials: moto accepts any, and they are not AWS's documented example keys by design.
ACCESS_KEY_ID = "AKIACEXTESTLOOPBACK01"
SECRET_ACCESS_KEY = "cex-test-loopback-secret-not-a-real-key-0001"


def offline_aws_env() -> dict[str, str]:
    """Environment under which boto finds dummy credentials and never asks an instance metadata service."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def aws_connection_json(endpoint_url: str, *, attempts: int = 2) -> str:
    """An ``aws_default``-style connection (as an ``AIRFLOW_CONN_*`` value) for an S3-compatible endpoint.

    ``attempts`` bounds botocore's retries, so a test of a cut connection fails in seconds, not minutes.
    """
    extra = {
        "endpoint_url": endpoint_url,
        "region_name": REGION,
        "config_kwargs": {"retries": {"mode": "standard", "max_attempts": attempts}, "connect_timeout": 5},
    }
    return json.dumps(
        {"conn_type": "aws", "login": ACCESS_KEY_ID, "password": SECRET_ACCESS_KEY, "extra": extra}
    )


def forget_s3_filesystems() -> None:
    """Drop Airflow's cached ``s3`` filesystems: each test points its connection at another port."""
    if AIRFLOW_V3:
        from airflow.sdk.io.store import _STORE_CACHE
    else:
        from airflow.io.store import _STORE_CACHE
    for alias in [a for a in _STORE_CACHE if a == "s3" or a.startswith("s3-")]:
        del _STORE_CACHE[alias]


class MotoS3:
    """moto's S3 server on 127.0.0.1 (a free port), in this process; ``client`` checks it directly."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoS3:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def port(self) -> int:
        return self._server.get_host_and_port()[1]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API), so each test starts from nothing."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


class CuttableRelay(LoopbackServer):
    """A loopback TCP relay to ``127.0.0.1:target_port`` that breaks once ``cut_after`` bytes went upstream.

    After the cut, ``mode="uploads"`` resets every connection that sends more than ``small_request`` bytes
    upstream (large bodies, i.e. part uploads, never get through; small requests such as an abort still do),
    like a path to the store that drops big transfers; ``mode="down"`` resets every connection and accepts no
    new one, like a store that went away. ``tripped`` tells whether the cut happened.
    """

    thread_name = "test-s3-relay"

    def __init__(
        self, target_port: int, *, cut_after: int, mode: str = "uploads", small_request: int = 64 << 10
    ):
        if mode not in ("uploads", "down"):
            raise ValueError(f"unknown mode {mode!r}")
        super().__init__()
        self.target_port = target_port
        self.cut_after = cut_after
        self.mode = mode
        self.small_request = small_request
        self.upstream_bytes = 0
        self.tripped = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _close_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _cut_all(self) -> None:
        self.tripped.set()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tripped.is_set() and self.mode == "down":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        sent_since_cut = 0

        async def upstream() -> None:
            nonlocal sent_since_cut
            while chunk := await reader.read(64 << 10):
                was_tripped = self.tripped.is_set()
                self.upstream_bytes += len(chunk)
                if not was_tripped and self.upstream_bytes >= self.cut_after:
                    self._cut_all()  # this connection too: the request it carried is lost
                    return
                if was_tripped:
                    sent_since_cut += len(chunk)
                    if self.mode == "down" or sent_since_cut > self.small_request:
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                up_writer.write(chunk)
                await up_writer.drain()
            up_writer.write_eof()

        async def downstream() -> None:
            while chunk := await up_reader.read(64 << 10):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()

        try:
            await asyncio.gather(upstream(), downstream())
        except (OSError, RuntimeError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                if self.tripped.is_set():
                    w.transport.abort()
                else:
                    w.close()


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    """Start ``server`` (a :class:`MotoS3` or :class:`CuttableRelay`) and always stop it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def serve(argv: list[str] | None = None) -> int:
    """``python -m testkit.s3``: moto's S3 server in a process of its own (benchmarks), until SIGTERM/SIGINT.

    Prints ``moto S3 listening on http://127.0.0.1:PORT`` once it listens.
    """
    import logging
    import signal

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = MotoS3().start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"moto S3 listening on {server.endpoint_url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(serve())
