"""Command line entry point: ``python -m airflow_provider_cex.emulator`` serves until SIGTERM or SIGINT.

It prints one line, ``Content Exporter emulator listening on http://HOST:PORT``, once it is listening; the
access log goes to stderr and never contains the API key. With ``--tls`` the URL is ``https://`` and a
second line follows, ``CA bundle: PATH``: the PEM file of the throwaway CA that issued the server's
certificate (for the connection extra ``verify``), removed when the emulator stops.

To serve many concurrent keep-alive clients (benchmarks run 1,000), it raises its soft open-file limit to the
hard limit at start; the listen backlog is :data:`~airflow_provider_cex.emulator.lifecycle.LISTEN_BACKLOG`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

from airflow_provider_cex.endpoints import KEY_HEADER

from .server import DEFAULT_FAILURE_MESSAGE, DEMO_API_KEY, ContentExporterEmulator, is_loopback_host
from .tls import DEFAULT_TLS_NAMES

API_KEY_ENV = "CEX_EMULATOR_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_cex.emulator",
        description="Serve a local Content Exporter Remote API (loopback only) until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default 0)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"accepted {KEY_HEADER} (default: ${API_KEY_ENV}, else the demo key {DEMO_API_KEY})",
    )
    parser.add_argument(
        "--export-seconds", type=float, default=2.0, help="time for an export to reach 100%% (default 2)"
    )
    parser.add_argument(
        "--export-seconds-spread",
        type=float,
        default=0.0,
        metavar="S",
        help="add to each export a deterministic fraction of S seconds derived from its page id, spreading "
        "completion times uniformly over S (default 0: every export takes --export-seconds)",
    )
    parser.add_argument(
        "--artifact-bytes",
        type=int,
        default=None,
        help="serve this many deterministic pseudo-random bytes instead of a small PDF",
    )
    parser.add_argument(
        "--fail-page",
        dest="fail_pages",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID",
        help="page id whose exports fail (repeatable)",
    )
    parser.add_argument(
        "--fail-message", default=DEFAULT_FAILURE_MESSAGE, help="errorMessage of failed exports"
    )
    parser.add_argument(
        "--artifact-dir", default=None, help="where to create the temporary artifact directory"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a certificate from a throwaway CA made at start; prints the CA bundle's path",
    )
    parser.add_argument(
        "--tls-name",
        dest="tls_names",
        action="append",
        default=None,
        metavar="NAME",
        help="host name or IP address the certificate is valid for (repeatable; default 127.0.0.1 and "
        "localhost); needs --tls",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    return parser


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (a client connection is a descriptor); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


async def _serve(emulator: ContentExporterEmulator, access_log: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await emulator.start_async(access_log=access_log)
    try:
        print(f"Content Exporter emulator listening on {emulator.base_url}", flush=True)
        if emulator.ca_path is not None:
            print(f"CA bundle: {emulator.ca_path}", flush=True)
        await stop.wait()
    finally:
        await emulator.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not is_loopback_host(args.host):
        parser.error(f"--host {args.host} is not a loopback address; use 127.0.0.1, ::1 or localhost")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.export_seconds < 0:
        parser.error("--export-seconds must be >= 0")
    if args.export_seconds_spread < 0:
        parser.error("--export-seconds-spread must be >= 0")
    if args.artifact_bytes is not None and args.artifact_bytes < 0:
        parser.error("--artifact-bytes must be >= 0")
    if args.tls_names and not args.tls:
        parser.error("--tls-name needs --tls")
    if args.tls_names and not all(name.strip() for name in args.tls_names):
        parser.error("--tls-name must not be empty")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or DEMO_API_KEY
    raise_open_file_limit()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    emulator = ContentExporterEmulator(
        api_key,
        export_seconds=args.export_seconds,
        export_seconds_spread=args.export_seconds_spread,
        artifact_bytes=args.artifact_bytes,
        host=args.host,
        port=args.port,
        fail_page_ids=args.fail_pages,
        failure_message=args.fail_message,
        artifact_dir=args.artifact_dir,
        tls=args.tls,
        tls_names=args.tls_names or DEFAULT_TLS_NAMES,
    )
    try:
        asyncio.run(_serve(emulator, access_log=not args.quiet))
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
