"""Export files served by the Content Exporter emulator: a small valid PDF, or deterministic bytes of a size.

Files are written block by block, hashed on the way, so a 1 GiB artifact never sits in memory.
"""

from __future__ import annotations

import hashlib
import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BLOCK_SIZE = 1 << 20
"""Deterministic artifacts are produced in blocks of this many bytes (1 MiB)."""

_SEED = "airflow-provider-cex emulator artifact v1"
PDF_TEXT = "Exported by the Content Exporter emulator"


@dataclass(frozen=True)
class Artifact:
    """A file on disk that the emulator serves as the export result.

    :param path: where the file is.
    :param sha256: hex SHA-256 digest of the whole file.
    :param size: size in bytes.
    """

    path: Path
    sha256: str
    size: int


def _pdf_string(text: str) -> str:
    """Escape ``text`` as a PDF literal string (ASCII only, to keep the file trivially valid)."""
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    escaped = ascii_text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})"


def build_sample_pdf(text: str = PDF_TEXT) -> bytes:
    """Return a minimal, valid one-page PDF 1.4 showing ``text``, with a correct cross-reference table."""
    content = f"BT /F1 18 Tf 72 720 Td {_pdf_string(text)} Tj ET\n".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(content)).encode("ascii") + b" >>\nstream\n" + content + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    # The binary comment on line 2 tells transfer tools the file is binary, as real PDF writers do.
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode("ascii") + body + b"\nendobj\n"
    xref_offset = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode("ascii")
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode("ascii")
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode("ascii")
    out += f"startxref\n{xref_offset}\n%%EOF\n".encode("ascii")
    return bytes(out)


def deterministic_blocks(size: int) -> Iterator[bytes]:
    """Yield exactly ``size`` pseudo-random bytes in blocks of at most :data:`BLOCK_SIZE`.

    The stream is the same in every process and run, and a shorter stream is a prefix of a longer one.
    Each block is one fixed random block passed through a different byte permutation, so no two blocks
    are equal (an off-by-one-block resume bug changes the digest) while generation stays fast.
    """
    if size < 0:
        raise ValueError(f"artifact size must be >= 0, got {size}")
    base = random.Random(_SEED).randbytes(BLOCK_SIZE)
    index = 0
    remaining = size
    while remaining > 0:
        permutation = list(range(256))
        random.Random(f"{_SEED}/{index}").shuffle(permutation)
        block = base.translate(bytes(permutation))
        if remaining < BLOCK_SIZE:
            block = block[:remaining]
        yield block
        remaining -= len(block)
        index += 1


def _write(path: Path, chunks: Iterator[bytes]) -> Artifact:
    """Write ``chunks`` to ``path``; hashing and writing run on a helper thread so they overlap generation."""
    digest = hashlib.sha256()
    size = 0
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # bounds memory to a few blocks
    errors: list[BaseException] = []

    def drain(fh: BinaryIO) -> None:
        while (chunk := pending.get()) is not None:
            if errors:
                continue  # keep draining so the producer never blocks
            try:
                digest.update(chunk)
                fh.write(chunk)
            except BaseException as exc:
                errors.append(exc)

    with path.open("wb") as fh:
        writer = threading.Thread(target=drain, args=(fh,), name="cex-emulator-artifact", daemon=True)
        writer.start()
        try:
            for chunk in chunks:
                if errors:
                    break
                pending.put(chunk)
                size += len(chunk)
        finally:
            pending.put(None)
            writer.join()
    if errors:
        raise errors[0]
    return Artifact(path=path, sha256=digest.hexdigest(), size=size)


def write_artifact(directory: Path, size: int | None = None) -> Artifact:
    """Write the export file into ``directory``: the sample PDF when ``size`` is None, else ``size`` bytes."""
    if size is None:
        return _write(directory / "export.pdf", iter([build_sample_pdf()]))
    return _write(directory / f"export-{size}.bin", deterministic_blocks(size))
