"""Atomic file writes: write to a temporary file in the target folder, then rename.

Nothing existing is overwritten unless the caller asks; a failed write (full disk, cancel, crash)
leaves no half-written file behind.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import ExportError


def _compound_suffix(path: Path) -> str:
    """The extension a writer picks the format from, lower-case (ITK refuses 'LABELS.NII' as a NIfTI name)."""
    name = path.name
    for suf in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.lower().endswith(suf):
            return suf
    return path.suffix.lower()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False,
                verify: Optional[Callable[[Path], Optional[str]]] = None,
                needs_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the file's extension (writers such as SimpleITK pick the format from it).
    verify: called with the written temporary file; a returned text (why it is incomplete) fails the
        write. Needed where a writer does not report a failed write (ITK's NIfTI writer only prints
        "wrote only N of M bytes" on a full disk and leaves a cut-off file).
    needs_bytes: an estimate of the file's size; refused at once ("disk is full") when the folder has
        less free space (for writers that crash on a full disk instead of raising, e.g. VTK's).
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
    if needs_bytes > 0:
        import shutil
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(target.parent).free
            if free < needs_bytes:
                raise ExportError(f"The disk is full: {target.name} needs about {_mb(needs_bytes)} and "
                                  f"{target.parent} has {_mb(free)} free; it was not written.")
    suffix = _compound_suffix(target)
    _remove_stale_parts(target, suffix)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ExportError(f"The disk is full: {target.name} was not written.") from None
        raise ExportError(f"Cannot write in the folder {target.parent}: {exc.strerror or exc} "
                          "(a read-only or protected folder?); nothing was written.") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise ExportError(f"Writing {target.name} produced no data (is the disk full?); nothing was changed.")
        problem = verify(tmp) if verify is not None else None
        if problem:
            raise ExportError(f"{target.name} could not be written completely ({problem}); the disk may be "
                              "full. Nothing was changed.")
        # mkstemp creates the file owner-only (0600); exports must be readable like any other file
        # (a shared folder, a PACS import), so apply the process umask as a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ExportError(f"The disk is full (or the file is larger than this disk or account allows): "
                              f"{target.name} was not written (nothing was changed).") from exc
        raise ExportError(f"Could not write {target}: {exc.strerror or exc}.") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


#: A temporary file of this age (no write for this long) is left over from a killed process.
STALE_PART_SECONDS = 600


def _remove_stale_parts(target: Path, suffix: str) -> None:
    """Delete temporary files of ``target`` that a killed write left behind (``kill -9``, a power cut: no
    chance to clean up); a live write keeps its file's modification time fresh."""
    import time

    now = time.time()
    with contextlib.suppress(OSError):
        for p in target.parent.glob(f".{glob.escape(target.name)}.*.part{glob.escape(suffix)}"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > STALE_PART_SECONDS:
                    p.unlink()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{max(n, 0) / 1e3:.0f} kB"


def _unlink_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)
