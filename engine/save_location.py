"""Where the window proposes to save a case's label map: never the CT's own source folder.

The command line refuses an output folder that is its input folder (engine.cli.paths: source data is only
ever read, and a label file written among the CTs would be read as one more CT by the next batch run; one
written into a DICOM folder would be read with the series). The window's Save dialog therefore proposes the
last folder the user saved to when it is not a source folder, else the user's LiverPlan folder
(``~/Documents/LiverPlan``, or ``~/LiverPlan`` without a Documents folder), and refuses a DICOM folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def source_folder_of(case) -> Optional[Path]:
    """The folder the case's CT was read from: the DICOM folder, or the folder holding the CT file; None for
    a built case (a phantom) or an unknown source."""
    p = case.provenance
    if not p.source or p.source_format in ("", "phantom"):
        return None
    src = Path(p.source).expanduser()
    if src.is_dir():
        return src
    return src.parent


def _inside(path: Path, folder: Path) -> bool:
    try:
        a, b = path.resolve(), folder.resolve()
    except OSError:
        return False
    return a == b or b in a.parents


def user_results_dir(home: Optional[Path] = None, create: bool = True) -> Path:
    """The user's LiverPlan folder for saved labels and exports (made when missing; the home folder when it
    cannot be)."""
    home = Path(home) if home is not None else Path.home()
    docs = home / "Documents"
    folder = (docs if docs.is_dir() else home) / "LiverPlan"
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return home
    return folder


def proposed_label_path(case, last_folder: Optional[Path] = None, home: Optional[Path] = None) -> Path:
    """Where Save proposes to write ``case``'s labels: ``<case>_labels.nii.gz`` in ``last_folder`` (the last
    folder saved to) unless that is the CT's source folder (or inside it), else in :func:`user_results_dir`."""
    name = f"{case.file_stem}_labels.nii.gz"
    src = source_folder_of(case)
    if last_folder is not None and Path(last_folder).is_dir() and not (src is not None and _inside(Path(last_folder), src)):
        return Path(last_folder) / name
    return user_results_dir(home) / name


def label_save_problem(case, path) -> Optional[str]:
    """Why ``path`` must not take the labels (a sentence), or None. Refused: a file inside the CT's DICOM
    folder, which would be read as part of the series next time (as the command line refuses it)."""
    p = case.provenance
    src = source_folder_of(case)
    if src is None or p.source_format != "dicom":
        return None
    if _inside(Path(path).parent, src):
        return (f"{Path(path).name} would be written into the DICOM folder of the CT ({src}). Files added there "
                "are read with the series the next time it is opened, and source data is only ever read. "
                "Choose another folder.")
    return None
