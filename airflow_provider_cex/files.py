"""Where a downloaded export lands: safe file names, the unique temp file, the atomic rename, fsync.

The download loop in the hook only moves bytes; everything about files on disk is here, so a
download that fails or is killed never leaves a partial file at its destination.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from email.message import Message
from typing import BinaryIO

from airflow_provider_cex.exceptions import ContentExporterError
from airflow_provider_cex.redaction import scrub

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_BAD_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
MAX_FILENAME_BYTES = 200


def filename_from_content_disposition(header: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header proposes (``filename*`` preferred), unsanitised."""
    if not header:
        return None
    msg = Message()
    msg["content-disposition"] = header
    try:
        name = msg.get_filename()
    except (TypeError, ValueError, LookupError):
        return None
    return name if isinstance(name, str) and name else None


def sanitize_filename(name: str | None, fallback: str) -> str:
    """A safe single file name from a server-proposed one: no path, no control or reserved names.

    The result never contains a path separator, is never ``.``/``..`` or hidden, fits in
    ``MAX_FILENAME_BYTES`` bytes of UTF-8 (keeping the extension), and is ``fallback`` when
    nothing usable remains.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]  # drop any directory part, either flavour
    text = _BAD_CHARS.sub("_", text)
    text = "".join(ch for ch in text if ch.isprintable())
    previous = None
    while previous != text:  # ". .pdf" must not end up as the hidden ".pdf"
        previous, text = text, text.strip().strip(".")
    if not text or set(text) <= {"_", " ", "."}:
        text = fallback
    stem, dot, ext = text.rpartition(".")
    if not dot:
        stem, ext = text, ""
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED or text.upper() in _WINDOWS_RESERVED:
        text = "_" + text
    if len(text.encode("utf-8")) > MAX_FILENAME_BYTES:
        ext_part = ("." + ext) if dot and 0 < len(ext.encode()) <= 16 else ""
        budget = MAX_FILENAME_BYTES - len(ext_part.encode("utf-8"))
        head = text[: len(text) - len(ext_part)] if ext_part else text
        head = head.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ")
        text = (head or "export") + ext_part
    return text


def default_filename(export_hash: str, content_type: str | None) -> str:
    """File name used when the server proposes none: ``export-<hash>.<ext from Content-Type>``."""
    mime = (content_type or "").split(";")[0].strip().lower()
    ext = mimetypes.guess_extension(mime) if mime else None
    safe_hash = re.sub(r"[^A-Za-z0-9_-]", "_", export_hash)[:64]
    return f"export-{safe_hash}{ext or '.bin'}"


def exists_message(where: str) -> str:
    """The one message for a destination that exists while ``overwrite=False``."""
    return (
        f"{where} already exists and overwrite=False: delete it, choose another output path "
        "(e.g. with the run's date in it), or set overwrite=True."
    )


def refuse_existing(path: str, overwrite: bool) -> None:
    """With ``overwrite=False``, fail when any directory entry is at ``path`` (a dangling symlink too).

    An early check only, so no byte is downloaded in vain; the publish itself is exclusive
    (:func:`publish_exclusive`), since a file may appear between this check and the end of the download.
    """
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(exists_message(path))


def is_folder(destination: str) -> bool:
    """A destination ending in a separator, or naming an existing folder, receives the server's file name."""
    return destination.endswith(("/", os.sep)) or os.path.isdir(destination)


def final_path(
    destination: str,
    export_hash: str,
    content_type: str | None,
    content_disposition: str | None,
    secret: str | None = None,
) -> str:
    """The file a download goes to: ``destination`` itself, or the server's (sanitised) name inside it.

    ``secret``: the API key, scrubbed from the name once it is decoded (RFC 2231's ``filename*`` may hide
    it percent-encoded or split in parts).
    """
    if not is_folder(destination):
        return destination
    server_name = filename_from_content_disposition(content_disposition)
    if server_name and secret:
        server_name = scrub(server_name, secret)
    return os.path.join(
        destination, sanitize_filename(server_name, default_filename(export_hash, content_type))
    )


class TempFiles:
    """The temporary files of downloads in progress, so ``on_kill`` can remove them from another thread."""

    def __init__(self) -> None:
        self._paths: set[str] = set()

    @contextlib.contextmanager
    def writing(
        self, final: str, *, overwrite: bool, fsync: bool, expected_size: int | None = None
    ) -> Iterator[BinaryIO]:
        """A uniquely named temp file beside ``final``, moved into place when the block ends without error.

        Unique per call, so two tasks writing one destination never share a temp file. On any error
        (or a kill) the temp file is removed and ``final`` is untouched. ``fsync`` fsyncs the file
        before the publish and the folder after it, so a machine crash cannot leave an empty file.

        ``overwrite=True`` renames the temp file onto ``final`` (replacing a file or symlink there, never
        a symlink's target). ``overwrite=False`` publishes exclusively (:func:`publish_exclusive`): of
        several writers of one name exactly one wins, and every other gets :class:`FileExistsError`.

        A full disk, a read-only folder or a permission error (creating the folder or the temp file,
        writing inside the block, fsync, publish) becomes a
        :class:`~airflow_provider_cex.exceptions.ContentExporterError` naming the path and what to do;
        ``expected_size`` (the server's ``Content-Length``, when known) is quoted with the free space when
        the disk is full.
        """
        folder = os.path.dirname(os.path.abspath(final))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            if (wrapped := storage_error(err, final, folder, expected_size, creating_folder=True)) is None:
                raise
            raise wrapped from err
        try:
            fd, temp = create_temp_file(folder, os.path.basename(final))
        except OSError as err:
            if (wrapped := storage_error(err, final, folder, expected_size)) is None:
                raise
            raise wrapped from err
        self._paths.add(temp)
        temp_gone = False
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
            if overwrite:
                os.replace(temp, final)
            else:
                publish_exclusive(temp, final)  # FileExistsError(exists_message(final)) for a loser
            temp_gone = True  # renamed, or linked and then unlinked
            if fsync:
                fsync_folder(folder)
        except FileExistsError:
            raise
        except OSError as err:
            if (wrapped := storage_error(err, final, folder, expected_size)) is None:
                raise
            raise wrapped from err
        finally:
            self._paths.discard(temp)
            if not temp_gone:
                remove_quietly(temp)

    def remove_all(self) -> None:
        """Remove every temp file still open (best effort; the writer's own clean-up does the same)."""
        for path in list(self._paths):
            remove_quietly(path)
            self._paths.discard(path)


#: ``os.link`` errors meaning "no hard links here" (FAT, some network shares): reserve the name instead.
_NO_HARD_LINKS = frozenset(
    getattr(errno, name)
    for name in ("EPERM", "EOPNOTSUPP", "ENOTSUP", "EXDEV", "EMLINK", "ENOSYS")
    if hasattr(errno, name)
)
#: Flags reserving the final name: exactly one creator wins, and an existing symlink (even dangling) loses.
_RESERVE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def publish_exclusive(temp: str, final: str) -> None:
    """Move the complete ``temp`` to ``final`` only if no directory entry (file, folder, symlink) is there.

    Exclusive, not check-then-rename: ``os.link`` fails atomically when ``final`` exists, so of several
    writers exactly one wins; the temp file is then unlinked. Where hard links are unsupported, the name
    is reserved with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (again exactly one creator wins) and the temp file
    renamed onto that reservation. A loser gets :class:`FileExistsError` and its temp file stays for the
    caller to remove.
    """
    try:
        link = os.link
    except AttributeError:  # a platform without hard links
        _publish_by_reservation(temp, final)
        return
    try:
        link(temp, final)
    except FileExistsError:
        raise FileExistsError(exists_message(final)) from None
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        _publish_by_reservation(temp, final)
        return
    remove_quietly(temp)


def _publish_by_reservation(temp: str, final: str) -> None:
    try:
        fd = os.open(final, _RESERVE_FLAGS, 0o600)
    except FileExistsError:
        raise FileExistsError(exists_message(final)) from None
    except OSError as err:
        if err.errno == getattr(errno, "ELOOP", None):  # O_NOFOLLOW on a symlink, on some systems
            raise FileExistsError(exists_message(final)) from None
        raise
    try:
        reserved = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, final)
    except BaseException:
        # Remove our empty reservation, unless something else has replaced it meanwhile.
        with contextlib.suppress(OSError):
            now = os.lstat(final)
            if (now.st_dev, now.st_ino) == (reserved.st_dev, reserved.st_ino):
                os.unlink(final)
        raise


#: What each storage errno means, and what to do about it.
_STORAGE_PROBLEMS = {
    errno.ENOSPC: ("the disk is full", "Free space there or choose another output path."),
    errno.EROFS: (
        "the folder is read-only",
        "Choose another output path, or make the folder writable (e.g. mount it read-write).",
    ),
    errno.EACCES: (
        "permission denied",
        "Fix the folder's permissions for the user the worker runs as, or choose another output path.",
    ),
    errno.EPERM: (
        "permission denied",
        "Fix the folder's permissions for the user the worker runs as, or choose another output path.",
    ),
}
if hasattr(errno, "EDQUOT"):
    _STORAGE_PROBLEMS[errno.EDQUOT] = (
        "the disk is full (the disk quota is used up)",
        "Free space there (or raise the quota) or choose another output path.",
    )
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def storage_error(
    err: OSError, final: str, folder: str, expected_size: int | None = None, *, creating_folder: bool = False
) -> ContentExporterError | None:
    """A readable error for a full disk, a read-only folder or a permission error; None for other errors."""
    if err.errno is None or err.errno not in _STORAGE_PROBLEMS:
        return None
    what, todo = _STORAGE_PROBLEMS[err.errno]
    if creating_folder:
        failed_at = err.filename if isinstance(err.filename, str) and err.filename else folder
        action = f"Cannot create the folder {failed_at} for {final}"
    else:
        action = f"Cannot write the export to {final} (in the folder {folder})"
    size = ""
    if err.errno in _DISK_FULL:
        size = _space_problem(folder, expected_size)
    reason = err.strerror or errno.errorcode.get(err.errno, str(err.errno))
    return ContentExporterError(f"{action}: {what} ({reason}).{size} {todo}")


def _space_problem(folder: str, expected_size: int | None) -> str:
    """`` The export needs N bytes; M bytes are free on <folder>.`` with what is known, else ``""``."""
    free: int | None = None
    probe = folder
    while hasattr(os, "statvfs"):  # the folder itself may not exist yet: ask the nearest existing parent
        try:
            st = os.statvfs(probe)
        except OSError:
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
            continue
        free = st.f_bavail * st.f_frsize
        break
    parts = []
    if expected_size is not None:
        parts.append(f"the export needs {expected_size:,} bytes")
    if free is not None:
        parts.append(f"{free:,} bytes are free on {probe}")
    if not parts:
        return ""
    text = "; ".join(parts)
    return f" {text[0].upper()}{text[1:]}."


#: Flags for a new temp file: never follow or reuse an existing name, and not inherited by children.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def create_temp_file(folder: str, final_name: str) -> tuple[int, str]:
    """Create a new, uniquely named ``.<final_name>.<random>.part`` in ``folder``; return ``(fd, path)``.

    Unlike :func:`tempfile.mkstemp` (always ``0600``), the file is created with mode ``0666`` filtered by
    the process umask (and a default ACL, where the folder has one), so the renamed file has the mode any
    normally created file would have (``curl -o`` or ``open(path, "w")``) and other users can read it as
    the umask allows. ``O_EXCL`` keeps the name exclusive, as mkstemp does.
    """
    prefix = os.path.join(folder, f".{final_name[:60]}.")
    for _ in range(100):
        path = f"{prefix}{secrets.token_hex(6)}.part"
        try:
            return os.open(path, _CREATE_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a unique temporary file beside {final_name!r} in {folder}.")


def fsync_folder(folder: str) -> None:
    """Persist a rename: fsync the folder entry (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
