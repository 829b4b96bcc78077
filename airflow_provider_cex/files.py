"""Where a downloaded export lands: safe file names, the unique temp file, the atomic rename, fsync.

The download loop in the hook only moves bytes; everything about files on disk is here, so a
download that fails or is killed never leaves a partial file at its destination.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from email.message import Message
from typing import BinaryIO

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
        "(e.g. with {{ ds }} in it), or set overwrite=True."
    )


def refuse_existing(path: str, overwrite: bool) -> None:
    if not overwrite and os.path.exists(path):
        raise FileExistsError(exists_message(path))


def is_folder(destination: str) -> bool:
    """A destination ending in a separator, or naming an existing folder, receives the server's file name."""
    return destination.endswith(("/", os.sep)) or os.path.isdir(destination)


def final_path(
    destination: str, export_hash: str, content_type: str | None, content_disposition: str | None
) -> str:
    """The file a download goes to: ``destination`` itself, or the server's (sanitised) name inside it."""
    if not is_folder(destination):
        return destination
    server_name = filename_from_content_disposition(content_disposition)
    return os.path.join(
        destination, sanitize_filename(server_name, default_filename(export_hash, content_type))
    )


class TempFiles:
    """The temporary files of downloads in progress, so ``on_kill`` can remove them from another thread."""

    def __init__(self) -> None:
        self._paths: set[str] = set()

    @contextlib.contextmanager
    def writing(self, final: str, *, overwrite: bool, durable: bool) -> Iterator[BinaryIO]:
        """A uniquely named temp file beside ``final``, renamed onto it when the block ends without error.

        Unique per call, so two tasks writing one destination never share a temp file. On any error
        (or a kill) the temp file is removed and ``final`` is untouched. ``durable`` fsyncs the file
        before the rename and the folder after it, so a machine crash cannot leave an empty file.
        """
        folder = os.path.dirname(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        fd, temp = create_temp_file(folder, os.path.basename(final))
        self._paths.add(temp)
        renamed = False
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            refuse_existing(final, overwrite)  # it may have appeared while we downloaded
            os.replace(temp, final)
            renamed = True
            if durable:
                fsync_folder(folder)
        finally:
            self._paths.discard(temp)
            if not renamed:
                remove_quietly(temp)

    def remove_all(self) -> None:
        """Remove every temp file still open (best effort; the writer's own clean-up does the same)."""
        for path in list(self._paths):
            remove_quietly(path)
            self._paths.discard(path)


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
