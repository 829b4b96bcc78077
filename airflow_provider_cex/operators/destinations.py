"""Where an operator saves a finished export: a local path or object storage, never a partial file.

Shared by the download operator and the one-task export operator, so both save, report and
clean up the same way. Imported only when a task runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_cex.exceptions import ContentExporterError
from airflow_provider_cex.files import exists_message, is_folder

if TYPE_CHECKING:
    from airflow_provider_cex.hooks.content_exporter import ContentExporterHook
    from airflow_provider_cex.progress import ExportWatch

MIB = 1 << 20
S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
#: Part size of S3 multipart uploads: the worker holds about two parts in memory while uploading.
UPLOAD_PART_BYTES = 16 * MIB
#: S3 allows 10,000 parts per upload; files over ~140 GiB get bigger parts, with a margin.
MAX_UPLOAD_PARTS = 9_000
COPY_CHUNK_BYTES = 4 * MIB


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


def require_output_connection(output: str, output_conn_id: str | None) -> None:
    """An object storage ``output_conn_id`` must name a connection that exists, checked before any download.

    The amazon provider falls back to the worker's own credentials (instance role, environment) when the
    connection does not exist, with only a warning: a typo would upload somewhere else, or with other rights.
    Raises ``LookupError`` with what to do.
    """
    if not output_conn_id or not is_object_storage(output):
        return
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        BaseHook.get_connection(output_conn_id)
    except AirflowNotFoundException:
        raise LookupError(
            f"output_conn_id {output_conn_id!r} names no Airflow connection. Create it (for S3, a "
            "connection of type 'aws'; for MinIO or Ceph with the extra endpoint_url), or fix the id. "
            "Without it the upload would quietly use this worker's own credentials."
        ) from None


#: Template variables that exist only in runs with a logical date (Airflow 3 runs triggered from the CLI,
#: from REST without one, or by an asset have none of them).
_LOGICAL_DATE_NAMES = (
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
    "logical_date",
    "execution_date",
    "data_interval_start",
    "data_interval_end",
)
RUN_DAY_TEMPLATE = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"


def check_download_outputs(start: Any, context: Any, log: Any) -> None:
    """Render and check, before an export starts, the ``output_path`` of each download task downstream of
    ``start``: a template that cannot render in this run, an empty path or a missing ``output_conn_id``
    fails the start task (``ValueError``), so no export is wasted on a download that must fail.

    Only templates that depend on nothing but the run are checked: a path produced by another task (an
    XComArg, a template that pulls XCom) or mapped over is known only when the download runs. Whether the
    folder can be written is not checked here: the download may run on another worker, with other mounts.
    """
    try:
        downstream = start.get_flat_relatives(upstream=False)
    except Exception:  # a task outside a DAG: nothing downstream to check
        return
    for task in sorted(downstream, key=lambda t: str(getattr(t, "task_id", ""))):
        fields = getattr(task, "template_fields", ())
        if "export_hash" not in fields or "output_path" not in fields:
            continue  # not a download task
        partial = getattr(task, "partial_kwargs", None)  # a mapped download: only its unmapped arguments
        source = partial if isinstance(partial, dict) else vars(task)
        raw, conn_id = source.get("output_path"), source.get("output_conn_id")
        if not isinstance(raw, str) or any(_reads_other_tasks(t) for t in (raw, conn_id)):
            continue
        try:
            output = str(start.render_template(raw, context) or "").strip()
            if isinstance(conn_id, str):
                conn_id = start.render_template(conn_id, context)
        except Exception as err:  # what the download's own rendering would raise, after the export
            raise ValueError(_unrenderable(task.task_id, raw, err)) from None
        if "/None/" in f"/{output}/" and _uses_logical_date(raw):  # {{ dag_run.logical_date | ds }}
            raise ValueError(
                f"the output_path of {task.task_id} renders as {output!r} in this run: it has no logical "
                f"date. No export was started. {_RUN_DAY_ADVICE}"
            )
        if not output:
            raise ValueError(
                f"the output_path of {task.task_id} renders empty in this run. No export was started: "
                "fix the template (a file path or a folder)."
            )
        try:
            require_output_connection(output, conn_id if isinstance(conn_id, str) else None)
        except LookupError as err:
            raise ValueError(f"{task.task_id}: {err} No export was started.") from None
        log.debug("%s will save to %s (checked before the export starts).", task.task_id, output)


def _reads_other_tasks(template: Any) -> bool:
    """A template whose value depends on other tasks' XComs: rendered only when the download runs."""
    words = ("xcom_pull", "task_instance", "ti.")
    return isinstance(template, str) and any(word in template for word in words)


_RUN_DAY_ADVICE = (
    "On Airflow 3 a run triggered from the CLI, from REST without a logical date, or by an asset has none: "
    "{{ ds }} and the other date variables are undefined there. "
    f"Use {RUN_DAY_TEMPLATE} for the run's day."
)


def _uses_logical_date(template: str) -> bool:
    import re

    return any(re.search(rf"\b{name}\b", template) for name in _LOGICAL_DATE_NAMES)


def _unrenderable(task_id: str, template: str, err: BaseException) -> str:
    reason = str(err) if str(err).startswith("'") else f"{type(err).__name__}: {err}"
    message = f"the output_path of {task_id} cannot be rendered in this run ({reason}). No export was started"
    if _uses_logical_date(template):
        return f"{message}. {_RUN_DAY_ADVICE}"
    return f"{message}: fix the template."


def save_export(
    hook: ContentExporterHook,
    export_hash: str,
    output: str,
    *,
    overwrite: bool,
    output_conn_id: str | None,
    fsync: bool,
    log: Any,
    watch: ExportWatch | None = None,
) -> tuple[str, dict[str, Any]]:
    """Download ``export_hash`` to ``output``; return the final path or URL and the XCom metadata.

    Logs one line when the file landed (``watch`` names the page): where, size, time, speed, sha256, and the
    size of the file it replaced, if any. The metadata's ``replaced`` is ``{"size_bytes": N}`` or None.
    """
    from airflow_provider_cex.progress import ExportWatch

    watch = watch or ExportWatch(export_hash)
    started = time.monotonic()
    if is_object_storage(output):
        final, meta, replaced = _save_to_object_storage(
            hook, export_hash, output, overwrite, output_conn_id, log
        )
    else:
        destination = local_path(output)
        before = _sizes_before(destination)
        result = hook.download_export(export_hash, destination, overwrite=overwrite, fsync=fsync)
        final, meta = result.path, dataclasses.asdict(result)
        replaced = before.get(os.path.basename(result.path))
    elapsed = time.monotonic() - started
    meta["replaced"] = None if replaced is None else {"size_bytes": replaced}
    log.info("%s", watch.saved_line(final, meta["size_bytes"], elapsed, meta["sha256"], replaced))
    return final, meta


def _sizes_before(destination: str) -> dict[str, int]:
    """Sizes of the regular files the download may replace, by name: the file ``destination`` names, or
    every file in a folder destination (the server names the file only once the download starts).

    Read before the download: afterwards the old file is gone (the new one is renamed over it).
    """
    try:
        if not is_folder(destination):
            info = os.stat(destination)
            return {os.path.basename(destination): info.st_size} if stat.S_ISREG(info.st_mode) else {}
        with os.scandir(destination) as entries:
            return {
                entry.name: entry.stat().st_size for entry in entries if entry.is_file(follow_symlinks=True)
            }
    except OSError:  # nothing there yet, or a folder not created yet: nothing to replace
        return {}


def _save_to_object_storage(
    hook: ContentExporterHook,
    export_hash: str,
    output: str,
    overwrite: bool,
    output_conn_id: str | None,
    log: Any,
) -> tuple[str, dict[str, Any], int | None]:
    """Download to a local temp folder, then upload; a failed upload leaves no object behind."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    target = ObjectStoragePath(output, conn_id=output_conn_id)
    as_folder = output.endswith("/") or _safe_is_dir(target)
    if not as_folder and not overwrite and target.exists():
        raise FileExistsError(exists_message(output))
    with tempfile.TemporaryDirectory(prefix="cex-download-") as local_folder:
        # A staging copy: not lineage. ObjectStoragePath reports the object it writes to Airflow's collector.
        result = hook.download_export(export_hash, local_folder + os.sep, report_lineage=False)
        final = target / result.filename if as_folder else target
        if not overwrite and final.exists():
            raise FileExistsError(exists_message(str(final)))
        replaced = _object_size(final) if overwrite else None
        options = upload_options(final.protocol, result.size_bytes, result.content_type)
        try:
            _upload(result.path, final, options, log)
        except Exception as err:
            raise ContentExporterError(upload_failure_message(err, final, output_conn_id)) from err
    meta = dataclasses.asdict(result)
    meta["path"] = url = _display_url(final)  # as the user wrote it: asset URIs and lineage match it
    return url, meta, replaced


def _object_size(path: Any) -> int | None:
    """The size of the object the upload will replace, or None when there is none (or it cannot be read)."""
    try:
        if not path.exists():
            return None
        info = path.stat()
        size = info.get("size") if isinstance(info, dict) else getattr(info, "st_size", None)
        return int(size) if size is not None else None
    except Exception:  # a report only: never a reason to fail the upload
        return None


def upload_options(protocol: str, size: int, content_type: str | None) -> dict[str, Any]:
    """Extra ``open()`` arguments for uploading ``size`` bytes: on S3, the part size and the Content-Type.

    s3fs buffers a part and copies it to send it, so the worker holds about two parts: with s3fs's default
    50 MiB part, a 200 MiB upload peaked 132 MiB above a 10 MiB one, with 16 MiB parts 28 MiB
    (benchmarks/s3_upload_rss.py). Parts grow only when S3's 10,000-part limit needs it.
    """
    if protocol.lower() not in S3_PROTOCOLS:
        return {}
    part = max(UPLOAD_PART_BYTES, -(-size // MAX_UPLOAD_PARTS))
    options: dict[str, Any] = {"block_size": -(-part // MIB) * MIB}
    if content_type:
        options["ContentType"] = content_type
    return options


def _upload(source_path: str, final: Any, options: dict[str, Any], log: Any) -> None:
    """Stream the file to ``final``; publish it only when every byte went, else abandon the upload."""
    sink = final.open("wb", **options)
    try:
        with open(source_path, "rb") as source:
            shutil.copyfileobj(source, sink, COPY_CHUNK_BYTES)
        sink.close()  # publishes: completes the multipart upload (or one PUT for a small file)
    except BaseException:
        _abandon(sink, final, log)
        raise


def _abandon(sink: Any, final: Any, log: Any) -> None:
    """After a failed upload: publish nothing, abort the multipart upload, remove a partial object."""
    from fsspec.spec import AbstractBufferedFile

    handle = getattr(sink, "_obj", sink)  # ObjectStoragePath wraps the fsspec file to record lineage
    if isinstance(handle, AbstractBufferedFile):
        # s3fs, gcsfs, adlfs: the object appears only when the file is closed, so an older object at that
        # key stays as it was. Closing now would publish the part written so far: discard() instead (s3fs
        # aborts the multipart upload, whose parts S3 would otherwise keep, and bill, indefinitely).
        upload_id = (getattr(handle, "mpu", None) or {}).get("UploadId")
        try:
            handle.discard()
        except Exception as err:
            log.warning(
                "Upload to %s failed, and its multipart upload %s could not be aborted (%s). Its parts "
                "stay in the bucket, invisible, until a lifecycle rule (AbortIncompleteMultipartUpload) "
                "removes them.",
                _display_url(final),
                upload_id,
                type(err).__name__,
            )
        else:
            if upload_id:
                log.error(
                    "Upload to %s failed; aborted its multipart upload, no object was written.",
                    _display_url(final),
                )
        handle.closed = True  # neither a later close() nor garbage collection may publish it
        return
    # Stores that create the object when it is opened (memory://, ...): remove what was written.
    log.error("Upload to %s failed; removing the partial object.", _display_url(final))
    with contextlib.suppress(Exception):
        sink.close()
    with contextlib.suppress(Exception):
        final.unlink()


def upload_failure_message(err: BaseException, final: Any, output_conn_id: str | None) -> str:
    """What the task says when an upload failed: where to, through which connection, and what to check."""
    where = (
        f"{_display_url(final)} (connection {output_conn_id!r})" if output_conn_id else _display_url(final)
    )
    reason = f"{type(err).__name__}: {err}"
    if isinstance(err, FileNotFoundError) and "bucket" in str(err).lower():
        hint = f"bucket {_bucket(final)!r} does not exist, or the connection's endpoint is not the right one"
    elif isinstance(err, PermissionError):
        hint = "the store refused the connection's credentials, or they may not write to this bucket"
    else:
        hint = "the store could not be reached or the upload broke off; a retry downloads and uploads again"
    return f"Could not upload the export to {where}: {hint} ({reason}). No partial object was left there."


def _bucket(path: Any) -> str:
    # Airflow 2.11's ObjectStoragePath keeps the connection id in the bucket, as a user name: conn@bucket.
    return str(getattr(path, "bucket", "") or "").rpartition("@")[2]


def _display_url(path: Any) -> str:
    """``s3://bucket/key``, without the connection id ObjectStoragePath puts where a user name would go."""
    protocol = getattr(path, "protocol", "") or ""
    bucket = _bucket(path)
    key = getattr(path, "key", "") or ""
    return f"{protocol}://{bucket}/{key}" if protocol and bucket else str(path)


def _safe_is_dir(path: Any) -> bool:
    try:
        return bool(path.is_dir())
    except Exception:  # a missing bucket or prefix is simply not a folder yet
        return False
