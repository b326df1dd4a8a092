"""DICOM folders: find the series, describe them, pick the portal-venous CT, read it as a volume.

Headers are read with pydicom (``stop_before_pixels``) to group files into series; pixels are read with
SimpleITK's ImageSeriesReader from our own file list, sorted by the projection of ImagePositionPatient on
the slice normal (so file names and InstanceNumber do not matter).

Grouping: by SeriesInstanceUID, then split by what must agree inside one volume (modality, object kind,
image size, pixel spacing, orientation). Anonymised data may have EMPTY Study/Series UIDs (TotalSegmentator's
example series does); such files are grouped by FrameOfReferenceUID, SeriesNumber, description, protocol,
orientation and size instead, and get a key "noUID-<hash>".

Contrast phase is guessed from words in the series description/protocol ("portal", "venous", "PV",
"70s" -> portal; "arterial"; "native", "non-contrast", "plain" ...), then from timing: with a contrast agent
recorded, AcquisitionTime - ContrastBolusStartTime of 15-45 s suggests arterial, 50-110 s portal-venous,
110-600 s delayed. It is a guess, shown as such.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, Cancelled, ProgressCallback, check

log = logging.getLogger(__name__)

# SOP classes and modalities that are not CT images, in words a user understands.
_SOP_KINDS = {
    "1.2.840.10008.5.1.4.1.1.2": "CT image",
    "1.2.840.10008.5.1.4.1.1.2.1": "enhanced CT image",
    "1.2.840.10008.5.1.4.1.1.4": "MR image",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR image",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation object (DICOM SEG)",
    "1.2.840.10008.5.1.4.1.1.66": "raw data object",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture (screenshot) image",
    "1.2.840.10008.5.1.4.1.1.128": "PET image",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF document",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    "1.2.840.10008.5.1.4.1.1.1": "radiograph",
    "1.2.840.10008.5.1.4.1.1.1.1": "radiograph",
    "1.2.840.10008.5.1.4.1.1.6.1": "ultrasound image",
    "1.2.840.10008.1.3.10": "DICOMDIR index",
}
_MODALITY_KINDS = {
    "CT": "CT image", "MR": "MR image", "SEG": "segmentation object (DICOM SEG)", "SR": "structured report",
    "RTSTRUCT": "RT structure set", "RTDOSE": "RT dose", "RTPLAN": "RT plan", "PT": "PET image",
    "NM": "nuclear medicine image", "US": "ultrasound image", "CR": "radiograph", "DX": "radiograph",
    "PR": "presentation state", "KO": "key object selection", "DOC": "document", "OT": "other image",
    "SC": "secondary capture (screenshot) image", "XA": "angiography image",
}
CT_KINDS = ("CT image",)

#: Portal-venous timing window (s between contrast bolus start and acquisition).
PORTAL_WINDOW_S = (50.0, 110.0)
ARTERIAL_WINDOW_S = (15.0, 45.0)
DELAYED_WINDOW_S = (110.0, 600.0)
#: Below this z coverage (mm) a series gets a "coverage is tiny" warning (a liver is ~150-200 mm tall).
MIN_COVERAGE_MM = 100.0

PHASE_WORDS: list[tuple[str, str]] = [
    ("native", r"\bnative?\b|non[\s_-]?contrast|\bplain\b|unenhanced|non[\s_-]?enhanced|without contrast|"
               r"\bnc\b|pre[\s_-]?contrast|\bnat\b|ohne\s*km|\bnon[\s_-]?con\b"),
    ("portal", r"portal|venous|ven[oö]s|\bpv\b|\bpvp\b|\bpo?rtv\b|\b(5[5-9]|[6-9]\d|10\d)\s*(s|sec|secs)\b"),
    ("arterial", r"arteri|\bart\b|\bha\b|\bcta\b|angio|\b(1[5-9]|[23]\d|4[0-5])\s*(s|sec|secs)\b"),
    ("delayed", r"delay|equilibr|\blate\b|\bspät|\b(1[2-9]\d|[2-9]\d\d)\s*(s|sec|secs)\b|\b[3-9]\s*min\b"),
]
PHASE_TEXT = {"portal": "portal venous", "arterial": "arterial", "delayed": "delayed", "native": "native",
              "contrast": "contrast, phase unknown", "unknown": "unknown"}


class SeriesChoiceNeeded(InputError):
    """The folder holds several CT series and none is clearly the portal-venous one.

    ``series`` lists every series found (SeriesInfo); call again with ``series=<SeriesInfo.key>``.
    """

    def __init__(self, message: str, series: list["SeriesInfo"]):
        super().__init__(message)
        self.series = series


@dataclass
class _Header:
    path: Path
    modality: str = ""
    kind: str = ""
    sop_class: str = ""
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference: str = ""
    series_number: Optional[int] = None
    description: str = ""
    protocol: str = ""
    rows: int = 0
    cols: int = 0
    pixel_spacing: Optional[tuple[float, float]] = None
    orientation: Optional[tuple[float, ...]] = None
    position: Optional[tuple[float, float, float]] = None
    slice_thickness: Optional[float] = None
    acquisition_time: str = ""
    acquisition_number: Optional[int] = None
    contrast_agent: str = ""
    bolus_start: str = ""
    frames: int = 1
    gantry_tilt: float = 0.0
    truncated: bool = False
    has_pixels: bool = True
    segment_names: list[str] = field(default_factory=list)


@dataclass
class SeriesInfo:
    """One series (or one sub-volume of a series) found in a DICOM folder.

    spacing is (z, y, x) mm; files are sorted along the slice normal (inferior -> superior for axial
    LPS data); ``problem`` is None when the series can be loaded as a CT volume, else the reason in words.
    """

    key: str
    modality: str
    description: str
    n_slices: int
    spacing: Optional[tuple[float, float, float]]
    slice_thickness: Optional[float]
    acquisition_time: str
    phase_guess: str
    files: list[Path]
    warnings: list[str] = field(default_factory=list)
    phase_reason: str = ""
    kind: str = "CT image"
    problem: Optional[str] = None
    series_uid: str = ""
    study_uid: str = ""
    series_number: Optional[int] = None
    size_xyz: Optional[tuple[int, int, int]] = None
    contrast_agent: str = ""
    protocol: str = ""
    coverage_mm: Optional[float] = None
    segment_names: list[str] = field(default_factory=list)
    tilt_deg: float = 0.0                                  # gantry tilt seen in the slice positions
    positions: list = field(default_factory=list)          # sorted ImagePositionPatient (tilted series only)

    @property
    def usable(self) -> bool:
        return self.problem is None

    def label(self) -> str:
        desc = self.description or "(no description)"
        return f"{self.modality or '?'} '{desc}', {self.n_slices} file(s)"

    def to_dict(self) -> dict:
        return {"key": self.key, "modality": self.modality, "kind": self.kind, "description": self.description,
                "n_slices": self.n_slices, "spacing_zyx_mm": list(self.spacing) if self.spacing else None,
                "size_xyz": list(self.size_xyz) if self.size_xyz else None,
                "slice_thickness_mm": self.slice_thickness, "acquisition_time": self.acquisition_time,
                "phase_guess": self.phase_guess, "phase_reason": self.phase_reason,
                "contrast_agent": self.contrast_agent, "series_uid": self.series_uid,
                "series_number": self.series_number, "coverage_mm": self.coverage_mm,
                "problem": self.problem, "warnings": list(self.warnings),
                "files": [str(f) for f in self.files]}


# --------------------------------------------------------------------------------------------
def _s(ds, name: str) -> str:
    v = ds.get(name, "")
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _floats(ds, name: str, n: int) -> Optional[tuple[float, ...]]:
    v = ds.get(name)
    if v is None:
        return None
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


def _float(ds, name: str) -> Optional[float]:
    v = ds.get(name)
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _pixel_data_truncated(f, file_size: int) -> tuple[bool, bool]:
    """(has pixel data, truncated) from the file position where pydicom stopped before the pixels."""
    pos = f.tell()
    head = f.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        return False, False
    if head[4:6] in (b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"):
        length = int.from_bytes(head[8:12], "little")
        start = pos + 12
    else:
        length = int.from_bytes(head[4:8], "little")
        start = pos + 8
    if length == 0xFFFFFFFF:
        # Encapsulated (compressed) pixels end with a sequence delimitation item.
        f.seek(max(start, file_size - 256))
        return True, b"\xfe\xff\xdd\xe0" not in f.read()
    return True, start + length > file_size


def read_header(path: Path) -> Optional[_Header]:
    """The header fields LiverPlan needs, or None when the file is not DICOM; a damaged header is a
    "damaged DICOM file". pydicom decodes elements lazily, so a malformed element can raise almost anything
    (NotImplementedError for an unknown VR, MemoryError for a huge length) well after the file was opened."""
    try:
        return _read_header(path)
    except Exception as exc:  # noqa: BLE001 - see above: every failure of a header is a damaged file
        if _looks_like_dicom(path):
            log.info("unreadable DICOM header %s: %s: %s", path, type(exc).__name__, exc)
            return _Header(path=path, kind="damaged DICOM file", truncated=True, has_pixels=False)
        return None


def _read_header(path: Path) -> Optional[_Header]:
    """The header fields LiverPlan needs, or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError:
                # Older files have no 128-byte preamble + "DICM"; accept them only when a forced parse
                # finds image attributes (a text or other binary file does not have them).
                f.seek(0)
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                    if "Rows" not in ds or not ("Modality" in ds or "SOPClassUID" in ds):
                        return None
                except Exception:  # anything a forced parse of a non-DICOM file may raise
                    return None
            has_pixels, truncated = _pixel_data_truncated(f, size)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
        # A header that cannot be parsed at all: report as a damaged DICOM when it starts like one.
        if _looks_like_dicom(path):
            log.info("unreadable DICOM header %s: %s", path, exc)
            return _Header(path=path, kind="damaged DICOM file", truncated=True, has_pixels=False)
        return None
    meta = getattr(ds, "file_meta", None)
    sop = _s(ds, "SOPClassUID") or (_s(meta, "MediaStorageSOPClassUID") if meta is not None else "")
    modality = _s(ds, "Modality").upper()
    if sop.startswith("1.2.840.10008.5.1.4.1.1.88."):
        kind = "structured report"
    else:
        kind = _SOP_KINDS.get(sop) or _MODALITY_KINDS.get(modality, f"{modality or 'unknown'} object")
        # Anonymisers sometimes blank SOPClassUID so the file meta's class is all we have; where the
        # Modality of an image says otherwise (an MR stored under a CT class), the Modality wins.
        if kind in ("CT image", "enhanced CT image", "MR image") and modality in _MODALITY_KINDS \
                and _MODALITY_KINDS[modality] != kind:
            kind = _MODALITY_KINDS[modality]
    if not modality and sop == "1.2.840.10008.1.3.10":
        modality = "DICOMDIR"
    h = _Header(path=path, modality=modality, kind=kind, sop_class=sop,
                series_uid=_s(ds, "SeriesInstanceUID"), study_uid=_s(ds, "StudyInstanceUID"),
                frame_of_reference=_s(ds, "FrameOfReferenceUID"),
                description=_s(ds, "SeriesDescription"), protocol=_s(ds, "ProtocolName"),
                rows=int(ds.get("Rows") or 0), cols=int(ds.get("Columns") or 0),
                pixel_spacing=_floats(ds, "PixelSpacing", 2),
                orientation=_floats(ds, "ImageOrientationPatient", 6),
                position=_floats(ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
                slice_thickness=_float(ds, "SliceThickness"),
                acquisition_time=_s(ds, "AcquisitionTime") or _s(ds, "ContentTime"),
                contrast_agent=_s(ds, "ContrastBolusAgent"), bolus_start=_s(ds, "ContrastBolusStartTime"),
                gantry_tilt=_float(ds, "GantryDetectorTilt") or 0.0,
                truncated=truncated, has_pixels=has_pixels)
    try:
        h.series_number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        pass
    try:
        h.acquisition_number = int(ds.get("AcquisitionNumber")) \
            if ds.get("AcquisitionNumber") not in (None, "") else None
    except (TypeError, ValueError):
        pass
    try:
        h.frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        h.frames = 1
    if "SegmentSequence" in ds:
        h.segment_names = [str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence]
    return h


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) >= 132 and head[128:132] == b"DICM"


# --------------------------------------------------------------------------------------------
def _tm_seconds(tm: str) -> Optional[float]:
    """DICOM TM 'HHMMSS.frac' (or 'HH:MM:SS') -> seconds since midnight."""
    tm = tm.replace(":", "").strip()
    m = re.match(r"^(\d{2})(\d{2})?(\d{2})?(\.\d+)?$", tm)
    if not m:
        return None
    h, mi, s = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    return h * 3600 + mi * 60 + s + (float(m.group(4)) if m.group(4) else 0.0)


def format_time(tm: str) -> str:
    sec = _tm_seconds(tm)
    if sec is None:
        return tm
    return f"{int(sec // 3600):02d}:{int(sec % 3600 // 60):02d}:{int(sec % 60):02d}"


def guess_phase(text: str, contrast_agent: str = "", bolus_start: str = "",
                acquisition_time: str = "") -> tuple[str, str]:
    """(phase, reason): phase is one of portal, arterial, delayed, native, contrast, unknown.

    ``text`` is the series description and protocol name; words there win over timing.
    """
    low = text.lower()
    for phase, pattern in PHASE_WORDS:
        m = re.search(pattern, low)
        if m:
            return phase, f"the description says '{m.group(0).strip()}'"
    agent = contrast_agent.strip()
    has_agent = bool(agent) and agent.upper() not in ("NONE", "NO", "0", "N/A")
    t0, t1 = _tm_seconds(bolus_start), _tm_seconds(acquisition_time)
    if has_agent and t0 is not None and t1 is not None:
        dt = t1 - t0
        if dt < -12 * 3600:   # acquired after midnight
            dt += 24 * 3600
        for phase, (lo, hi) in (("arterial", ARTERIAL_WINDOW_S), ("portal", PORTAL_WINDOW_S),
                                ("delayed", DELAYED_WINDOW_S)):
            if lo <= dt < hi:
                return phase, (f"contrast agent '{agent}' recorded and the scan started {dt:.0f} s after the "
                               f"bolus (typical {PHASE_TEXT[phase]}: {lo:.0f}-{hi:.0f} s)")
        return "contrast", f"contrast agent '{agent}' recorded; bolus-to-scan time {dt:.0f} s is not typical"
    if has_agent:
        return "contrast", f"contrast agent '{agent}' recorded, no timing"
    return "unknown", "no phase words in the description and no contrast tags"


# --------------------------------------------------------------------------------------------
def _iter_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            out.append(Path(root) / name)
    return out


def _group_base(h: _Header) -> str:
    if h.series_uid:
        return h.series_uid
    return "|".join(["noUID", h.study_uid, h.frame_of_reference, str(h.series_number), h.description,
                     h.protocol, h.modality])


def _sub_key(h: _Header) -> tuple:
    ori = tuple(round(v, 3) for v in h.orientation) if h.orientation else None
    ps = tuple(round(v, 4) for v in h.pixel_spacing) if h.pixel_spacing else None
    return (h.modality, h.kind, h.rows, h.cols, ps, ori)


def list_series(folder, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> list[SeriesInfo]:
    """All series in a DICOM folder (recursive), described and checked; files are never modified.

    Raises InputError when the folder does not exist, is empty or holds no DICOM file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"The folder {folder} does not exist.")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder.")
    files = _iter_files(folder)
    if not files:
        raise InputError(f"The folder {folder} is empty; choose the folder that holds the CT's DICOM files.")
    headers: list[_Header] = []
    non_dicom = 0
    for i, p in enumerate(files):
        check(cancel)
        if progress and (i % 20 == 0 or i == len(files) - 1):
            progress("Reading DICOM headers", i + 1, len(files))
        h = read_header(p)
        if h is None:
            non_dicom += 1
        elif h.modality != "DICOMDIR":
            headers.append(h)
    if not headers:
        images = [f.name for f in files if f.name.lower().endswith((".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"))]
        hint = (f" It holds image files ({', '.join(images[:3])}{', ...' if len(images) > 3 else ''}): open "
                "the CT file itself." if images else "")
        raise InputError(f"The folder {folder} holds {len(files)} file(s) but none is a DICOM image; "
                         "choose a folder with the CT's DICOM files, or open a NIfTI/NRRD file." + hint)
    return _describe_groups(headers, non_dicom)


def _is_broken(h: _Header) -> bool:
    return h.truncated or not h.has_pixels


def _describe_groups(headers: Sequence[_Header], non_dicom: int = 0) -> list[SeriesInfo]:
    groups: dict[str, dict[tuple, list[_Header]]] = {}
    for h in headers:
        groups.setdefault(_group_base(h), {}).setdefault(_sub_key(h), []).append(h)
    # A file cut off inside its header lacks later attributes (size, orientation, frame of reference) and
    # would form a "series" of its own: attach it, as a damaged file, to the series it belongs to.
    broken_of: dict[str, list[_Header]] = {}
    for base in list(groups):
        for sub in list(groups[base]):
            hs = groups[base][sub]
            if not all(_is_broken(h) for h in hs):
                continue
            home = _home_of(hs[0], groups, exclude=(base, sub))
            if home is not None:
                broken_of.setdefault(home, []).extend(hs)
                del groups[base][sub]
        if not groups[base]:
            del groups[base]
    out: list[SeriesInfo] = []
    for base, subs in groups.items():
        broken = broken_of.get(base, []) + [h for hs in subs.values() for h in hs if _is_broken(h)]
        for n, (sub, hs) in enumerate(sorted(subs.items(), key=lambda kv: -len(kv[1]))):
            if base.startswith("noUID"):
                key = "noUID-" + hashlib.sha1((base + repr(sub)).encode()).hexdigest()[:10]
            else:
                key = base if n == 0 else f"{base}#{n + 1}"
            if broken and not all(_is_broken(h) for h in hs):
                info = _describe(key, hs)
                if info.kind in CT_KINDS:
                    info.problem = (f"{len(broken)} file(s) of this series are incomplete (cut off), e.g. "
                                    f"{broken[0].path.name}; copy the series again from the PACS or CD.")
                out.append(info)
                continue
            parts = _split_acquisitions(hs)
            if len(parts) == 1:
                out.append(_describe(key, hs))
            else:
                for k, part in enumerate(parts, 1):
                    info = _describe(f"{key}#acq{k}", part)
                    info.warnings.append(f"This is acquisition {k} of {len(parts)} stored under one series; "
                                         "the acquisitions were separated by time / acquisition number.")
                    out.append(info)
    # Stable, readable order: CT volumes first, then by series number / description.
    out.sort(key=lambda s: (s.problem is not None, s.series_number if s.series_number is not None else 1 << 30,
                            s.description, s.key))
    if non_dicom and out:
        out[0].warnings.append(f"{non_dicom} file(s) in the folder are not DICOM and were ignored.")
    return out


def _home_of(h: _Header, groups: dict[str, dict[tuple, list[_Header]]], exclude: tuple) -> Optional[str]:
    """The group a damaged file belongs to: same series UID, else same description/modality/series number."""
    for base, subs in groups.items():
        for sub, hs in subs.items():
            if (base, sub) == exclude or all(_is_broken(x) for x in hs):
                continue
            g = hs[0]
            if h.series_uid and h.series_uid == g.series_uid:
                return base
            if not h.series_uid and not g.series_uid and h.description == g.description \
                    and h.modality == g.modality and h.series_number == g.series_number \
                    and h.study_uid == g.study_uid:
                return base
    return None


def _split_acquisitions(hs: list[_Header]) -> list[list[_Header]]:
    """Several acquisitions (e.g. arterial + portal) stored under one series UID at the same positions.

    Split by AcquisitionNumber, else by gaps of more than 10 s in acquisition time, but only when every
    part is then a clean volume (no repeated position, at least 2 slices); otherwise keep one group.
    """
    if len(hs) < 4 or any(h.position is None for h in hs):
        return [hs]
    positions = [tuple(np.round(h.position, 2)) for h in hs]
    if len(set(positions)) == len(positions):
        return [hs]

    def clean(parts: list[list[_Header]]) -> bool:
        return len(parts) > 1 and all(
            len(p) > 1 and len({tuple(np.round(h.position, 2)) for h in p}) == len(p) for p in parts)

    by_acq: dict = {}
    for h in hs:
        by_acq.setdefault(h.acquisition_number, []).append(h)
    parts = [by_acq[k] for k in sorted(by_acq, key=lambda k: (k is None, k))]
    if clean(parts):
        return parts
    timed = sorted(((_tm_seconds(h.acquisition_time), h) for h in hs), key=lambda t: (t[0] is None, t[0] or 0))
    if any(t is None for t, _ in timed):
        return [hs]
    parts = [[timed[0][1]]]
    for (t_prev, _), (t, h) in zip(timed, timed[1:]):
        if t - t_prev > 10.0:
            parts.append([])
        parts[-1].append(h)
    return parts if clean(parts) else [hs]


def _describe(key: str, hs: list[_Header]) -> SeriesInfo:
    h0 = hs[0]
    text = " ".join([h0.description, h0.protocol])
    first_time = min((h.acquisition_time for h in hs if h.acquisition_time), default="")
    phase, reason = guess_phase(text, h0.contrast_agent, h0.bolus_start, first_time)
    info = SeriesInfo(key=key, modality=h0.modality, description=h0.description, n_slices=len(hs),
                      spacing=None, slice_thickness=h0.slice_thickness,
                      acquisition_time=format_time(first_time),
                      phase_guess=phase, phase_reason=reason, files=[h.path for h in hs], kind=h0.kind,
                      series_uid=h0.series_uid, study_uid=h0.study_uid, series_number=h0.series_number,
                      contrast_agent=h0.contrast_agent, protocol=h0.protocol, segment_names=h0.segment_names)
    if h0.rows and h0.cols:
        info.size_xyz = (h0.cols, h0.rows, len(hs) if h0.frames <= 1 else h0.frames)
    info.problem = _check_volume(info, hs)
    return info


def _not_ct_message(kind: str, modality: str, h: _Header) -> str:
    if "segmentation" in kind:
        segs = f" (segments: {', '.join(h.segment_names)})" if h.segment_names else ""
        return ("This is not a CT: it is a segmentation object (DICOM SEG)" + segs + ". Open the CT series it "
                "belongs to, then load the segmentation as a label map.")
    if kind == "structured report":
        return "This is not a CT: it is a DICOM structured report (text, no image)."
    if kind == "damaged DICOM file":
        return "This DICOM file is damaged and cannot be read."
    article = "an" if kind[:1].lower() in "aeiou" or kind[:2] in ("MR", "RT") else "a"
    return (f"This is not a CT: it is {article} {kind} "
            f"(modality {modality or 'not stated'}). LiverPlan segments portal-venous CT only.")


def _check_volume(info: SeriesInfo, hs: list[_Header]) -> Optional[str]:
    """None when the files form a readable CT volume, else the reason in words. Fills spacing/warnings."""
    h0 = hs[0]
    if h0.kind == "enhanced CT image":
        return ("This is a multi-frame (enhanced) CT file; LiverPlan reads classic single-slice CT series. "
                "Export the series from the PACS as single-frame images.")
    if h0.kind not in CT_KINDS or h0.modality not in ("CT", ""):
        return _not_ct_message(h0.kind, h0.modality, h0)
    bad = [h.path.name for h in hs if h.truncated]
    if bad:
        return (f"{len(bad)} file(s) of this series are incomplete (cut off), e.g. {bad[0]}; copy the series "
                "again from the PACS or CD.")
    if any(not h.has_pixels for h in hs):
        bad = [h.path.name for h in hs if not h.has_pixels]
        return (f"{len(bad)} file(s) of this series hold no image data (they may have been cut off), e.g. "
                f"{bad[0]}.")
    if len(hs) == 1 and h0.frames > 1:
        return ("This is a multi-frame (enhanced) CT file; LiverPlan reads classic single-slice CT series. "
                "Export the series from the PACS as single-frame images.")
    if len(hs) == 1:
        return ("This series is a single 2D slice; LiverPlan needs a 3D CT volume (a series of many slices).")
    if any(h.position is None or h.orientation is None for h in hs):
        return ("Some slices have no position or orientation (ImagePositionPatient/ImageOrientationPatient), "
                "so they cannot be stacked into a volume.")
    if h0.pixel_spacing is None:
        return "The slices do not state their pixel spacing, so sizes cannot be measured."
    row = np.asarray(h0.orientation[:3])
    col = np.asarray(h0.orientation[3:])
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        return "The slice orientation (ImageOrientationPatient) is invalid."
    normal /= np.linalg.norm(normal)
    pos = np.array([h.position for h in hs], dtype=float)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    hs_sorted = [hs[i] for i in order]
    info.files = [h.path for h in hs_sorted]
    proj = proj[order]
    pos = pos[order]
    steps = np.diff(proj)
    dup = int(np.sum(steps < 1e-3))
    if dup:
        acq = sorted({h.acquisition_number for h in hs if h.acquisition_number is not None})
        extra = (f" It seems to hold several acquisitions (AcquisitionNumber {', '.join(map(str, acq))})."
                 if len(acq) > 1 else "")
        return (f"{dup} slice position(s) occur twice in this series, so it is not one volume.{extra} "
                "Export each acquisition as its own series.")
    step = float(np.median(steps))
    rel = np.abs(steps - step) / step
    if len(steps) and float(rel.max()) > 0.1:
        i = int(np.argmax(rel))
        ratio = steps[i] / step
        # "missing" only for a jump of about two or more steps (2.5 mm among 2.0 mm steps is uneven spacing)
        if ratio >= 1.75 and abs(ratio - round(ratio)) < 0.25:
            missing = int(round(ratio)) - 1
            return (f"Slices are missing: the slice positions jump by {steps[i]:.2f} mm between "
                    f"{proj[i]:.2f} and {proj[i + 1]:.2f} mm where the spacing is {step:.2f} mm "
                    f"(about {max(missing, 1)} slice(s) missing). Copy the complete series again.")
        return (f"The slice spacing is not uniform (steps from {steps.min():.2f} to {steps.max():.2f} mm); "
                "LiverPlan cannot stack these slices into one volume without distorting it.")
    if len(steps) and float(rel.max()) > 0.01:
        info.warnings.append(f"The slice spacing varies slightly ({steps.min():.3f}-{steps.max():.3f} mm); "
                             f"the median {step:.3f} mm is used.")
    # Gantry tilt: the line through the slice positions is not along the slice normal.
    span = pos[-1] - pos[0]
    if np.linalg.norm(span) > 0:
        cosang = abs(float(span @ normal) / float(np.linalg.norm(span)))
        tilt = float(np.degrees(np.arccos(min(1.0, cosang))))
        if tilt > 0.5:
            info.tilt_deg = tilt
            info.positions = pos.tolist()
            offsets = (pos - pos[0]) - np.outer((pos - pos[0]) @ normal, normal)
            info.warnings.append(
                f"The series was acquired with a gantry tilt of about {tilt:.1f} degrees: its slices are "
                f"shifted against each other (up to {float(np.linalg.norm(offsets, axis=1).max()):.0f} mm). "
                "LiverPlan resamples them onto an untilted grid when it opens the series (CT values "
                "interpolated between pixels), so shapes and distances are true; label maps are exported on "
                "that grid.")
        elif abs(h0.gantry_tilt) > 0.5:
            info.warnings.append(f"The header records a gantry tilt of {h0.gantry_tilt:g} degrees.")
    ps = h0.pixel_spacing
    info.spacing = (step, float(ps[0]), float(ps[1]))
    info.coverage_mm = float(proj[-1] - proj[0] + step)
    if info.coverage_mm < MIN_COVERAGE_MM:
        info.warnings.append(
            f"The series covers only {info.coverage_mm:.0f} mm along the body axis ({len(hs)} slices); "
            "a whole liver needs about 150-200 mm, so this is only a thin slab.")
    return None


# --------------------------------------------------------------------------------------------
def _match(series: list[SeriesInfo], wanted: str) -> SeriesInfo:
    w = str(wanted).strip()
    for s in series:
        if s.key == w:
            return s
    if w.isdigit() and 1 <= int(w) <= len(series):
        return series[int(w) - 1]
    cands = [s for s in series if s.key.startswith(w)] or \
            [s for s in series if s.description and s.description.lower() == w.lower()]
    if len(cands) == 1:
        return cands[0]
    raise SeriesChoiceNeeded(f"There is no single series '{w}' in this folder. " + _choices_text(series),
                             series)


def _choices_text(series: list[SeriesInfo]) -> str:
    lines = ["Choose one with its number or key (--series):"]
    for i, s in enumerate(series, 1):
        sp = "x".join(f"{v:.3g}" for v in s.spacing[::-1]) + " mm" if s.spacing else "-"
        state = "" if s.usable else f" [cannot load: {s.problem}]"
        lines.append(f"  {i}. {s.label()}, spacing {sp}, phase {PHASE_TEXT.get(s.phase_guess, s.phase_guess)}"
                     f", key {s.key}{state}")
    return "\n".join(lines)


def choose_series(series: list[SeriesInfo], wanted: Optional[str] = None) -> SeriesInfo:
    """The series to load: ``wanted`` (key, 1-based number, key prefix or exact description), else the
    only CT volume, else the only one that looks portal-venous. Raises SeriesChoiceNeeded otherwise."""
    if wanted:
        s = _match(series, wanted)
        if s.problem:
            raise InputError(f"Series {s.label()}: {s.problem}")
        return s
    usable = [s for s in series if s.usable]
    if not usable:
        if len(series) == 1:
            raise InputError(series[0].problem or "This series cannot be read.")
        kinds = "; ".join(f"{s.label()}: {s.problem}" for s in series)
        raise InputError(f"None of the {len(series)} series in this folder is a CT volume LiverPlan can read "
                         f"({kinds}).")
    if len(usable) == 1:
        return usable[0]
    portal = [s for s in usable if s.phase_guess == "portal"]
    if len(portal) == 1:
        return portal[0]
    why = ("several look portal-venous" if portal else "none is clearly the portal-venous phase")
    raise SeriesChoiceNeeded(f"This folder holds {len(usable)} CT series and {why}. " + _choices_text(series),
                             series)


def read_series(info: SeriesInfo, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None):
    """Read a checked series' pixels as a SimpleITK image (HU, source orientation)."""
    import SimpleITK as sitk

    if info.problem:
        raise InputError(info.problem)
    if info.size_xyz:
        # bounded reading: the slices' headers claim the size; refuse before decoding what cannot fit
        from .bounds import check_memory
        check_memory(f"The DICOM series '{info.description or info.key}'",
                     int(info.size_xyz[0]) * int(info.size_xyz[1]) * int(info.size_xyz[2]) * 4)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in info.files])
    reader.SetImageIO("GDCMImageIO")   # also for files without extension or "DICM" preamble
    reader.MetaDataDictionaryArrayUpdateOff()
    reader.LoadPrivateTagsOff()
    n = len(info.files)

    def _on_progress() -> None:
        if cancel is not None and cancel.cancelled:
            reader.Abort()
        if progress:
            progress("Reading DICOM slices", int(round(reader.GetProgress() * n)), n)

    reader.AddCommand(sitk.sitkProgressEvent, _on_progress)
    check(cancel)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("Cancelled by the user.") from None
        log.info("ImageSeriesReader failed: %s", exc)
        raise InputError(f"The DICOM series '{info.description or info.key}' could not be decoded "
                         f"({_first_line(exc)}). A file may be damaged or use an unsupported compression."
                         ) from None
    check(cancel)
    if progress:
        progress("Reading DICOM slices", n, n)
    # Our own spacing check is authoritative (ITK may estimate it from the first two slices only).
    if info.spacing is not None:
        sx, sy, sz = image.GetSpacing()
        if abs(sz - info.spacing[0]) > 1e-3 * info.spacing[0]:
            log.info("Correcting z spacing %.4f -> %.4f", sz, info.spacing[0])
            image.SetSpacing((sx, sy, info.spacing[0]))
    if info.tilt_deg > 0.5 and len(info.positions) == image.GetSize()[2]:
        image = untilt(image, np.asarray(info.positions, float))
    return image


def untilt(image, positions: np.ndarray):
    """A gantry-tilted series (slice k's corner at ``positions[k]``, not on the line along the slice normal
    through the first one) resampled onto the untilted grid: same in-plane axes and pixel size, slices
    along the normal; each slice is shifted in-plane by its offset (linear interpolation), and the grid is
    widened so that no pixel of any slice is lost (the new corners are air). What 3D Slicer's "acquisition
    geometry regularization" does; ITK alone would stack the slices as if untilted."""
    import SimpleITK as sitk
    from scipy import ndimage

    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    row, col, normal = d[:, 0], d[:, 1], d[:, 2]
    sx, sy, sz = image.GetSpacing()
    rel = positions - positions[0]
    offsets = rel - np.outer(rel @ normal, normal)
    a = offsets @ row / sx                     # column shift of each slice (pixels)
    b = offsets @ col / sy                     # row shift
    a[np.abs(a) < 1e-6], b[np.abs(b) < 1e-6] = 0.0, 0.0     # rounding noise must not widen the grid
    lo_x, hi_x = int(np.ceil(max(0.0, -a.min()) - 1e-6)), int(np.ceil(max(0.0, a.max()) - 1e-6))
    lo_y, hi_y = int(np.ceil(max(0.0, -b.min()) - 1e-6)), int(np.ceil(max(0.0, b.max()) - 1e-6))
    arr = sitk.GetArrayFromImage(image)        # (z, y, x)
    fill = float(min(arr.min(), -1024))
    out = np.empty((arr.shape[0], arr.shape[1] + lo_y + hi_y, arr.shape[2] + lo_x + hi_x), dtype=arr.dtype)
    for k in range(arr.shape[0]):
        padded = np.pad(arr[k].astype(np.float32), ((lo_y, hi_y), (lo_x, hi_x)), constant_values=fill)
        shifted = ndimage.shift(padded, (b[k], a[k]), order=1, mode="constant", cval=fill)
        if np.issubdtype(arr.dtype, np.integer):
            shifted = np.rint(shifted)
        out[k] = shifted.astype(arr.dtype)
    res = sitk.GetImageFromArray(out)
    res.SetSpacing((sx, sy, sz))
    res.SetDirection(tuple(d.ravel()))
    res.SetOrigin(tuple(positions[0] - lo_x * sx * row - lo_y * sy * col))
    return res


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[-1] if lines else type(exc).__name__
    return msg[:200]


def load_dicom_folder(folder, series: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelToken] = None):
    """(SimpleITK image, SeriesInfo, all SeriesInfo) of the chosen CT series in a folder."""
    all_series = list_series(folder, progress, cancel)
    chosen = choose_series(all_series, series)
    return read_series(chosen, progress, cancel), chosen, all_series


def series_of_file(path: Path) -> tuple[SeriesInfo, list[SeriesInfo]]:
    """The series a single DICOM file belongs to (searched among the files beside it)."""
    h = read_header(path)
    if h is None:
        raise InputError(f"{path} is not a DICOM file.")
    if h.kind not in CT_KINDS or h.truncated or not h.has_pixels:
        info = _describe("file", [h])
        return info, [info]
    siblings = [read_header(p) for p in sorted(path.parent.iterdir()) if p.is_file()]
    all_series = _describe_groups([x for x in siblings if x is not None and x.modality != "DICOMDIR"])
    for s in all_series:
        if any(Path(f).resolve() == path.resolve() for f in s.files):
            return s, all_series
    raise InputError(f"{path} could not be matched to a series.")  # pragma: no cover - defensive
