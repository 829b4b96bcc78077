"""Serving an aiohttp app on a loopback port: on the running event loop, or on a background thread.

:class:`Listener` also owns the artifact directory and, when serving HTTPS, the TLS files (both written at
start, removed at stop), and can stop listening for a while and listen again on the same port (a refusal
window).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from .artifacts import Artifact, write_artifact

if TYPE_CHECKING:
    from .tls import TlsFiles

LISTEN_BACKLOG = 2048
"""Listen queue length (aiohttp's default is 128), so a burst of ~1,000 connects cannot overflow the accept
queue (an overflow drops the SYN and costs the client a 1 s retransmit); the kernel caps it at
``net.core.somaxconn``. The server itself sets no connection limit."""


class Listener:
    """Runs the app ``make_app`` builds on ``host``:``port`` (0: a free one), with its artifact.

    :param artifact_bytes: serve that many deterministic pseudo-random bytes; None serves a small valid PDF.
    :param artifact_dir: parent directory for the temporary artifact directory (default: system temp dir).
    :param tls_names: serve HTTPS with a certificate for these names from a CA made at start; None: HTTP.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        make_app: Callable[[], web.Application],
        artifact_bytes: int | None,
        artifact_dir: Path | None,
        tls_names: tuple[str, ...] | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._make_app = make_app
        self._artifact_bytes = artifact_bytes
        self._artifact_parent = artifact_dir
        self._artifact: Artifact | None = None
        self._tmpdir: Path | None = None
        self._tls_names = tls_names
        self._tls: TlsFiles | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The bound port while running, else None."""
        # Set when running on a background thread (start/stop).
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._serving_loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._listening = threading.Event()
        self._listening.set()

    @property
    def artifact(self) -> Artifact:
        if self._artifact is None:
            raise RuntimeError("the emulator is not running, so it has no artifact")
        return self._artifact

    @property
    def ca_path(self) -> Path | None:
        """The CA bundle clients must trust while serving HTTPS; None when serving plain HTTP."""
        if self._tls_names is None:
            return None
        if self._tls is None:
            raise RuntimeError("the emulator is not running, so it has no CA bundle")
        return self._tls.ca_path

    # ---------------------------------------------------------------- artifact and TLS files

    def _prepare_artifact(self) -> None:
        parent = self._artifact_parent
        tmpdir = Path(tempfile.mkdtemp(prefix="cex-emulator-", dir=str(parent) if parent else None))
        try:
            self._artifact = write_artifact(tmpdir, self._artifact_bytes)
            if self._tls_names is not None:
                from .tls import create_tls_files  # imports cryptography: only when TLS is asked for

                self._tls = create_tls_files(self._tls_names, parent)
                self._ssl_context = self._tls.server_context()
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            self._artifact = None
            self._remove_tls()
            raise
        self._tmpdir = tmpdir

    def _remove_artifact(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None
        self._artifact = None
        self._remove_tls()

    def _remove_tls(self) -> None:
        if self._tls is not None:
            self._tls.remove()
        self._tls = None
        self._ssl_context = None

    # ---------------------------------------------------------------- on the running loop

    async def _start_site(self, access_log: bool) -> None:
        runner = web.AppRunner(
            self._make_app(),
            shutdown_timeout=2.0,
            access_log=web.access_logger if access_log else None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self._host,
                self._requested_port,
                backlog=LISTEN_BACKLOG,
                ssl_context=self._ssl_context,
            )
            await site.start()
            addresses = runner.addresses
            if not addresses:
                raise RuntimeError("the emulator did not bind any socket")
            self.port = int(addresses[0][1])
            self._serving_loop = asyncio.get_running_loop()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def start_async(self, *, access_log: bool = False) -> None:
        if self._runner is not None or self._thread is not None:
            raise RuntimeError("the emulator is already running")
        await asyncio.to_thread(self._prepare_artifact)
        try:
            await self._start_site(access_log)
        except BaseException:
            self._remove_artifact()
            raise

    async def stop_async(self) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            self.port = None
            self._remove_artifact()

    # ---------------------------------------------------------------- on a background thread

    def start(self, *, access_log: bool = False, timeout: float = 30.0) -> None:
        if self._runner is not None or self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._prepare_artifact()
        started = threading.Event()
        self._startup_error = None
        thread = threading.Thread(
            target=self._thread_main, args=(started, access_log), name="cex-emulator", daemon=True
        )
        self._thread = thread
        thread.start()
        if not started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the emulator did not start within {timeout} s")
        if self._startup_error is not None:
            error = self._startup_error
            self.stop()
            raise error

    def _thread_main(self, started: threading.Event, access_log: bool) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve_until_stopped(loop, started, access_log))
        finally:
            loop.close()

    async def _serve_until_stopped(
        self, loop: asyncio.AbstractEventLoop, started: threading.Event, access_log: bool
    ) -> None:
        stop_event = asyncio.Event()
        try:
            await self._start_site(access_log)
        except BaseException as exc:
            self._startup_error = exc
            started.set()
            return
        self._stop_event = stop_event
        self._loop = loop
        started.set()
        await stop_event.wait()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is not None:
            if loop is not None and stop_event is not None:
                # The loop may already be closing after a failed start.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"the emulator thread did not stop within {timeout} s")
        self._thread = self._loop = self._stop_event = None
        self.port = None
        self._remove_artifact()

    # ---------------------------------------------------------------- refusal window

    def require_serving(self) -> None:
        if self._serving_loop is None or self._runner is None:
            raise RuntimeError("the emulator is not running")

    def close_for(self, seconds: float) -> None:
        """Stop listening, then listen again on the same port after ``seconds``; returns once closed."""
        loop = self._serving_loop
        if loop is None or self._runner is None:
            raise RuntimeError("the emulator is not running")
        done = threading.Event()
        self._listening.clear()

        async def close_then_reopen() -> None:
            runner = self._runner
            if runner is None:
                done.set()
                return
            for site in list(runner.sites):
                await site.stop()
            done.set()
            await asyncio.sleep(seconds)
            try:
                if self._runner is runner and self.port is not None:
                    site = web.TCPSite(
                        runner,
                        self._host,
                        self.port,
                        backlog=LISTEN_BACKLOG,
                        reuse_address=True,
                        ssl_context=self._ssl_context,
                    )
                    await site.start()
            finally:
                self._listening.set()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(close_then_reopen())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        asyncio.run_coroutine_threadsafe(close_then_reopen(), loop)
        if not done.wait(10.0):
            raise RuntimeError("the emulator did not stop listening within 10 s")

    def wait_listening(self, timeout: float) -> bool:
        return self._listening.wait(timeout)
