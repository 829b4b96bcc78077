"""An asyncio TCP server on 127.0.0.1, on a free port, with its own thread and event loop: the base of the
test proxy (:mod:`tests.proxy`) and the S3 relay (:mod:`testkit.s3`). Subclasses implement ``_handle`` and
say in ``_close_connections`` how to drop what is still open when the server stops.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class LoopbackServer:
    thread_name = "test-loopback-server"
    #: ``StreamReader`` buffer limit of each connection (asyncio's default is 64 KiB).
    stream_limit = 64 * 1024

    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _close_connections(self) -> None:
        """Drop the connections still open (called on the server's loop when it stops)."""

    def start(self) -> Any:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, limit=self.stream_limit)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, self._loop = self._loop, None

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._close_connections()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        loop.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
