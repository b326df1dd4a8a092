"""Atomic file writes: write to a temporary file in the target folder, then rename.

Nothing existing is overwritten unless the caller asks; a failed write (full disk, cancel, crash)
leaves no half-written file behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ExportError


def _compound_suffix(path: Path) -> str:
    name = path.name
    for suf in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.lower().endswith(suf):
            return suf
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the file's extension (writers such as SimpleITK pick the format from it).
    Raises ExportError, in words a user understands, when the target exists (and ``overwrite`` is
    False), the folder is not writable, or the disk is full.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; choose another name or allow overwriting.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"Cannot create the folder {target.parent}: {exc.strerror or exc}.") from exc
    suffix = _compound_suffix(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise ExportError(f"Writing {target.name} produced no data.")
        # mkstemp creates the file owner-only (0600); exports must be readable like any other file
        # (a shared folder, a PACS import), so apply the process umask as a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        if exc.errno == errno.ENOSPC:
            raise ExportError(f"The disk is full: {target.name} was not written (nothing was changed).") from exc
        raise ExportError(f"Could not write {target}: {exc.strerror or exc}.") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)
