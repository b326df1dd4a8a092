"""Where a command may write: never into the folders its inputs are read from (source data is only read)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def source_folder(path: Path) -> Optional[Path]:
    """The folder an input is read from as a whole: the input itself when it is a folder, the folder of a
    DICOM file (one file opens its whole series); None for any other file."""
    from engine.io.images import is_dicom_file

    if path.is_dir():
        return path
    if path.is_file() and is_dicom_file(path):
        return path.parent
    return None


def out_in_folder(out: Path, folder: Optional[Path]) -> Optional[str]:
    """'is' when ``out`` is ``folder``, 'inside' when it lies within it, None otherwise."""
    if folder is None:
        return None
    o, f = out.resolve(), folder.resolve()
    if o == f:
        return "is"
    return "inside" if f in o.parents else None
