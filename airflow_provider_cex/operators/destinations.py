"""Where an operator saves a finished export: a local path or object storage, never a partial file.

Shared by the download operator and the one-task export operator, so both save, report and
clean up the same way. Imported only when a task runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_cex.files import exists_message

if TYPE_CHECKING:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook


def is_object_storage(output: str) -> bool:
    scheme = output.split("://", 1)[0].lower() if "://" in output else ""
    return bool(scheme) and scheme != "file"


def local_path(output: str) -> str:
    """A plain path for a local ``output_path`` (``file://`` URLs included), keeping a trailing ``/``."""
    if output.lower().startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(output).path)
    return output


def refuse_existing_destination(output: str, output_conn_id: str | None) -> None:
    """With ``overwrite=False``: fail before anything starts when ``output`` names an existing file.

    A folder destination (the server picks the file name) can only be checked once the name is known.
    """
    if is_object_storage(output):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        target = ObjectStoragePath(output, conn_id=output_conn_id)
        if not output.endswith("/") and not _safe_is_dir(target) and target.exists():
            raise FileExistsError(exists_message(output))
        return
    path = local_path(output)
    if not path.endswith(("/", os.sep)) and os.path.isfile(path):
        raise FileExistsError(exists_message(path))


def save_export(
    hook: ContentExporterHook,
    export_hash: str,
    output: str,
    *,
    overwrite: bool,
    output_conn_id: str | None,
    fsync: bool,
    log: Any,
) -> tuple[str, dict[str, Any]]:
    """Download ``export_hash`` to ``output``; return the final path or URL and the XCom metadata."""
    started = time.monotonic()
    if is_object_storage(output):
        final, meta = _save_to_object_storage(hook, export_hash, output, overwrite, output_conn_id, log)
    else:
        result = hook.download_export(export_hash, local_path(output), overwrite=overwrite, durable=fsync)
        final, meta = result.path, dataclasses.asdict(result)
    elapsed = max(time.monotonic() - started, 1e-6)
    log.info(
        "Saved export %s to %s: %.1f MB in %.2f s (%.1f MB/s), sha256 %s",
        export_hash,
        final,
        meta["size_bytes"] / 1e6,
        elapsed,
        meta["size_bytes"] / 1e6 / elapsed,
        meta["sha256"],
    )
    return final, meta


def _save_to_object_storage(
    hook: ContentExporterHook,
    export_hash: str,
    output: str,
    overwrite: bool,
    output_conn_id: str | None,
    log: Any,
) -> tuple[str, dict[str, Any]]:
    """Download to a local temp folder, then upload; a failed upload leaves no object behind."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    target = ObjectStoragePath(output, conn_id=output_conn_id)
    as_folder = output.endswith("/") or _safe_is_dir(target)
    if not as_folder and not overwrite and target.exists():
        raise FileExistsError(exists_message(output))
    with tempfile.TemporaryDirectory(prefix="cex-download-") as local_folder:
        result = hook.download_export(export_hash, local_folder + os.sep)
        final = target / result.filename if as_folder else target
        if not overwrite and final.exists():
            raise FileExistsError(exists_message(str(final)))
        try:
            with open(result.path, "rb") as source, final.open("wb") as sink:
                shutil.copyfileobj(source, sink, 8 * 1024 * 1024)
        except BaseException:
            log.error("Upload to %s failed; removing the partial object.", final)
            with contextlib.suppress(Exception):
                final.unlink()
            raise
    meta = dataclasses.asdict(result)
    meta["path"] = str(final)
    return str(final), meta


def _safe_is_dir(path: Any) -> bool:
    try:
        return bool(path.is_dir())
    except Exception:  # a missing bucket or prefix is simply not a folder yet
        return False
