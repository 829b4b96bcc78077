"""``overwrite=False`` publishes exclusively; symlinks count as existing; full or read-only disks fail.

What a user sees: of many writers of one name exactly one succeeds and the file holds its bytes; an
existing entry (a dangling symlink too) is never replaced; a full disk or an unwritable folder ends in a
:class:`ContentExporterError` naming the path and what to do, with no temp file and nothing at the
destination.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_cex import files
from airflow_provider_cex.exceptions import ContentExporterError
from airflow_provider_cex.files import TempFiles, refuse_existing

WRITERS = 200
ROUNDS = 5


def write(
    final: Path,
    data: bytes = b"",
    *,
    overwrite: bool = False,
    fsync: bool = False,
    expected_size: int | None = None,
    during: Callable[[], None] | None = None,
) -> None:
    """One download: ``data`` written through :meth:`TempFiles.writing`, then ``during`` in the block."""
    with TempFiles().writing(
        str(final), overwrite=overwrite, fsync=fsync, expected_size=expected_size
    ) as out:
        out.write(data)
        if during is not None:
            during()


def raising(err: OSError) -> Callable[[], None]:
    def fail() -> None:
        raise err

    return fail


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def payload(i: int) -> bytes:
    return f"{i:03d}|".encode() * 300


def contend(final: Path) -> tuple[list[int], list[BaseException]]:
    """``WRITERS`` threads write distinct bytes to ``final`` and publish at (nearly) the same moment."""
    barrier = threading.Barrier(WRITERS, timeout=60)
    winners: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with TempFiles().writing(str(final), overwrite=False, fsync=False) as out:
                out.write(payload(i))
                barrier.wait()  # everyone has its bytes written; now all publish together
            winners.append(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return winners, errors


def assert_one_winner(tmp_path: Path, round_no: int) -> None:
    folder = tmp_path / f"round{round_no}"
    folder.mkdir()
    final = folder / "export.pdf"
    winners, errors = contend(final)
    assert len(winners) == 1, f"round {round_no}: {len(winners)} writers reported success"
    assert len(errors) == WRITERS - 1
    assert all(type(e) is FileExistsError for e in errors), {type(e).__name__ for e in errors}
    assert all(str(e) == files.exists_message(str(final)) for e in errors)
    assert final.read_bytes() == payload(winners[0])
    assert leftovers(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["export.pdf"]


def slow_replace(monkeypatch) -> None:
    """Widen any window between a check and the rename, so check-then-rename loses every time."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        time.sleep(0.002)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def no_hard_links(monkeypatch, code: int = errno.EPERM) -> None:
    def link(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", link)


# --- contention: exactly one writer wins ---------------------------------------------------------------


@pytest.mark.parametrize("widened", [False, True], ids=["natural", "widened-window"])
def test_many_writers_of_one_name_exactly_one_wins(tmp_path, monkeypatch, widened):
    if widened:
        slow_replace(monkeypatch)
    for round_no in range(ROUNDS):
        assert_one_winner(tmp_path, round_no)


@pytest.mark.parametrize(
    "code", [errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP], ids=["EPERM", "EXDEV", "EOPNOTSUPP"]
)
def test_without_hard_links_the_reserved_name_still_lets_exactly_one_win(tmp_path, monkeypatch, code):
    no_hard_links(monkeypatch, code)
    slow_replace(monkeypatch)  # the reservation, not timing, must keep the others out
    for round_no in range(ROUNDS):
        assert_one_winner(tmp_path, round_no)


def test_a_platform_without_os_link_reserves_the_name(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "link")
    assert_one_winner(tmp_path, 0)


def test_a_file_appearing_during_the_download_is_not_replaced(tmp_path):
    final = tmp_path / "a.pdf"
    with pytest.raises(FileExistsError, match="already exists and overwrite=False"):
        write(final, b"mine", fsync=True, during=lambda: final.write_bytes(b"theirs"))  # another task won
    assert final.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == []


def test_overwrite_true_still_replaces(tmp_path):
    final = tmp_path / "a.pdf"
    final.write_bytes(b"old")
    with TempFiles().writing(str(final), overwrite=True, fsync=True) as out:
        out.write(b"new")
    assert final.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf"]


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "reservation"])
def test_the_published_file_has_the_bytes_and_a_normal_mode(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        no_hard_links(monkeypatch)
    final = tmp_path / "a.pdf"
    with TempFiles().writing(str(final), overwrite=False, fsync=True) as out:
        out.write(b"x" * 100_000)
    assert final.read_bytes() == b"x" * 100_000
    assert final.stat().st_nlink == 1  # the temp name is gone, not a second link
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf"]


def test_a_reservation_whose_rename_fails_is_removed(tmp_path, monkeypatch):
    no_hard_links(monkeypatch)

    def replace(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", replace)
    final = tmp_path / "a.pdf"
    with pytest.raises(OSError, match="Input/output error"):
        write(final, b"data")
    assert list(tmp_path.iterdir()) == []  # neither the empty reservation nor the temp file


# --- symlinks at the destination -------------------------------------------------------------------------


@pytest.fixture(params=["dangling", "to-a-file"])
def symlinked(request, tmp_path) -> tuple[Path, Path]:
    """``(link, target)``: ``out/a.pdf`` a symlink to ``elsewhere/t.pdf`` (missing, or holding b"target")."""
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "t.pdf"
    if request.param == "to-a-file":
        target.write_bytes(b"target")
    link = tmp_path / "out" / "a.pdf"
    link.symlink_to(target)
    return link, target


def target_state(target: Path) -> bytes | None:
    return target.read_bytes() if target.exists() else None


def test_refuse_existing_refuses_any_symlink(symlinked):
    link, _ = symlinked
    with pytest.raises(FileExistsError, match="already exists and overwrite=False"):
        refuse_existing(str(link), overwrite=False)
    refuse_existing(str(link), overwrite=True)  # no error


@pytest.mark.parametrize("hard_links", [True, False], ids=["link", "reservation"])
def test_overwrite_false_never_replaces_a_symlink_nor_writes_through_it(symlinked, monkeypatch, hard_links):
    if not hard_links:
        no_hard_links(monkeypatch)
    link, target = symlinked
    before = (os.readlink(link), target_state(target))
    with pytest.raises(FileExistsError, match="already exists and overwrite=False"):
        write(link, b"download")
    assert link.is_symlink() and (os.readlink(link), target_state(target)) == before
    assert leftovers(link.parent) == []


def test_overwrite_true_replaces_the_symlink_itself_not_its_target(symlinked):
    link, target = symlinked
    before = target_state(target)
    with TempFiles().writing(str(link), overwrite=True, fsync=False) as out:
        out.write(b"download")
    assert not link.is_symlink() and link.read_bytes() == b"download"
    assert target_state(target) == before
    assert sorted(p.name for p in link.parent.iterdir()) == ["a.pdf"]


# --- full disk -----------------------------------------------------------------------------------------

EXPECTED = 3_145_739


def assert_clean_failure(folder: Path, final: Path) -> None:
    assert not os.path.lexists(final)
    assert leftovers(folder) == []


def assert_readable(message: str) -> None:
    assert "Traceback" not in message and "\n" not in message


@pytest.fixture
def dev_full(monkeypatch):
    """Temp files whose writes hit ``/dev/full``: a real ``ENOSPC`` from the kernel, without a full disk."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real_create = files.create_temp_file

    def create(folder: str, final_name: str) -> tuple[int, str]:
        fd, path = real_create(folder, final_name)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, path

    monkeypatch.setattr(files, "create_temp_file", create)


@pytest.mark.parametrize("size", [1_000_000, 10], ids=["write-in-the-block", "flush-at-close"])
def test_a_full_disk_names_the_path_the_size_and_the_free_space(tmp_path, dev_full, size):
    final = tmp_path / "exports" / "page-1.pdf"
    with pytest.raises(ContentExporterError) as info:
        write(final, b"x" * size, expected_size=EXPECTED)
    message = str(info.value)
    assert str(final) in message
    assert "the disk is full" in message
    assert "the export needs 3,145,739 bytes" in message.lower()
    assert f"bytes are free on {final.parent}" in message
    assert "Free space there or choose another output path" in message
    assert_readable(message)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert_clean_failure(final.parent, final)


def test_a_full_disk_without_a_known_size_still_says_the_disk_is_full(tmp_path, dev_full):
    final = tmp_path / "page-1.pdf"
    with pytest.raises(ContentExporterError, match="the disk is full") as info:
        write(final, b"x" * 100_000, overwrite=True, fsync=True)
    assert str(final) in str(info.value) and "needs" not in str(info.value)
    assert_clean_failure(tmp_path, final)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_raised_inside_the_block_is_explained(tmp_path, code):
    final = tmp_path / "page-1.pdf"
    with pytest.raises(ContentExporterError) as info:
        write(final, b"part", expected_size=EXPECTED, during=raising(OSError(code, os.strerror(code))))
    message = str(info.value)
    assert str(final) in message and "the disk is full" in message and "3,145,739 bytes" in message
    assert_readable(message)
    assert_clean_failure(tmp_path, final)


def test_a_full_disk_at_fsync_is_explained(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    final = tmp_path / "page-1.pdf"
    with pytest.raises(ContentExporterError, match="the disk is full"):
        write(final, b"0123456789", fsync=True, expected_size=10)
    assert_clean_failure(tmp_path, final)


def test_a_full_disk_when_creating_the_folder_names_the_folder(tmp_path, monkeypatch):
    def mkdir(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(os, "mkdir", mkdir)
    final = tmp_path / "new" / "page-1.pdf"
    with pytest.raises(ContentExporterError) as info:
        write(final, expected_size=EXPECTED)
    message = str(info.value)
    assert f"Cannot create the folder {final.parent} for {final}" in message
    assert "the disk is full" in message and "3,145,739 bytes" in message
    assert f"bytes are free on {tmp_path}" in message  # the folder is missing: its parent is asked
    assert not (tmp_path / "new").exists()


# --- read-only folders, permission errors ----------------------------------------------------------------


def failing_open(monkeypatch, code: int, when) -> None:
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if when(os.fspath(path)):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize(
    ("code", "what", "todo"),
    [
        (errno.EROFS, "the folder is read-only", "Choose another output path"),
        (errno.EACCES, "permission denied", "Fix the folder's permissions"),
        (errno.EPERM, "permission denied", "Fix the folder's permissions"),
    ],
)
def test_an_unwritable_folder_names_the_folder_and_what_to_do(tmp_path, monkeypatch, code, what, todo):
    failing_open(monkeypatch, code, lambda path: path.endswith(".part"))  # the temp file cannot be created
    final = tmp_path / "page-1.pdf"
    with pytest.raises(ContentExporterError) as info:
        write(final)
    message = str(info.value)
    assert str(final) in message and f"in the folder {tmp_path}" in message
    assert what in message and todo in message
    assert "bytes are free" not in message  # space is not the problem
    assert_readable(message)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_parent_when_creating_the_folder_is_explained(tmp_path, monkeypatch):
    def mkdir(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(os, "mkdir", mkdir)
    final = tmp_path / "a" / "b" / "page-1.pdf"
    with pytest.raises(ContentExporterError) as info:
        write(final, overwrite=True)
    message = str(info.value)
    assert message.startswith(
        f"Cannot create the folder {tmp_path / 'a'} for {final}: the folder is read-only"
    )
    assert "Choose another output path" in message


@pytest.mark.parametrize("overwrite", [True, False])
def test_permission_denied_at_publish_leaves_nothing(tmp_path, monkeypatch, overwrite):
    no_hard_links(monkeypatch)  # overwrite=False then reserves the name with os.open
    failing_open(monkeypatch, errno.EACCES, lambda path: path.endswith("page-1.pdf"))

    def replace(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", replace)
    final = tmp_path / "page-1.pdf"
    with pytest.raises(ContentExporterError, match="permission denied") as info:
        write(final, b"data", overwrite=overwrite)
    assert str(final) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_a_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ContentExporterError, match="permission denied") as info:
            write(folder / "page-1.pdf")
        assert str(folder) in str(info.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_other_errors_and_file_exists_are_not_wrapped(tmp_path):
    final = tmp_path / "page-1.pdf"
    with pytest.raises(OSError) as info:
        write(final, during=raising(OSError(errno.EIO, "Input/output error")))
    assert not isinstance(info.value, ContentExporterError) and info.value.errno == errno.EIO
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError) as exists:  # a file where the folder should be
        write(tmp_path / "file" / "a.pdf", overwrite=True)
    assert not isinstance(exists.value, ContentExporterError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
