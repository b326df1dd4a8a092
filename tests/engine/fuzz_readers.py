"""Fuzzing LiverPlan's readers (issue 13): run as a subprocess by tests/engine/test_fuzz.py.

``python tests/engine/fuzz_readers.py FAMILY N WORKDIR`` builds valid seed files of one reader family
(nifti, nrrd, mha, dicom, segnrrd, dicomseg), then lets Hypothesis mutate them (header fields set to odd
values, bytes flipped, files cut short, random bytes inserted) N times and opens every mutant the ways
LiverPlan does (``load_case``, ``read_label_map``, ``describe_path``). Allowed outcomes: opened, or a
:class:`~engine.errors.LiverPlanError` (a sentence for the user). Anything else (another exception, a crash,
memory past the limit) fails: the process runs under an address-space limit with faulthandler on, so a
segfault prints where it happened and a non-zero exit fails the test. Derandomized: the same examples on
every run.
"""
from __future__ import annotations

import faulthandler
import json
import os
import resource
import shutil
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MEMORY_LIMIT = 4 * 1024 ** 3

ODD_VALUES = ["0", "-1", "1", "2", "3", "4294967297", "2000 2000 2000", "65535 65535 65535", "nan", "inf", "-inf",
              "1e308", "-0", "", " ", "abc", "/dev/zero", "/dev/urandom", "../../../../etc/passwd", "LIST",
              "LIST 2D", "img%03d.raw 0 99999 1", "img%d.raw 5 1 0", "LOCAL", "gzip", "bzip2", "raw", "hex",
              "ascii", "True", "False", "MET_DOUBLE", "MET_UCHAR", "MET_OTHER", "double", "block", "uchar",
              "1 0 0 0 1 0 0 0 1", "(1,0,0) (0,1,0) (0,0,0)", "(nan,nan,nan) (1,0,0) (0,0,1)", "none", "-1 -1 -1",
              "8 8", "8 8 8 8", "little", "big", "0 0 0", "3 4 5 6 7"]


# ------------------------------------------------------------------------------------------------------------
def _volume(shape=(6, 10, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.full(shape, -1000, np.int16)
    a[1:-1, 2:-2, 2:-2] = rng.integers(-100, 200, (shape[0] - 2, shape[1] - 4, shape[2] - 4))
    return a


def _labels(shape=(6, 10, 12)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:5, 2:8, 2:10] = 1
    lab[2:4, 4:6, 4:6] = 2
    return lab


def _sitk_write(arr, path: Path, compress: bool = False) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.2, 2.0))
    img.SetOrigin((-10.0, 5.0, 3.0))
    sitk.WriteImage(img, str(path), useCompression=compress)


def write_dicom_series(folder: Path, n: int = 4, rows: int = 10, cols: int = 12) -> list[Path]:
    """A tiny CT series written with pydicom (portal venous, 2 mm slices)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    vol = _volume((n, rows, cols))
    out = []
    for i in range(n):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "FUZZ", "Fuzz^Test"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyTime, ds.StudyID = "19600101", "O", "101000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.Manufacturer = "A1", "", "LiverPlan tests"
        ds.StudyDate, ds.SeriesDate, ds.AcquisitionTime = "20260101", "20260101", "101500"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "abdomen portal venous", 3, i + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 2.0
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = vol[i].tobytes()
        p = folder / f"slice{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def build_seeds(family: str, seeds: Path) -> dict:
    """Valid files of one family; returns {name: (path, how it is opened)} and the reference geometry."""
    seeds.mkdir(parents=True, exist_ok=True)
    vol, lab = _volume(), _labels()
    made: dict[str, tuple[Path, str]] = {}
    if family == "nifti":
        for ext, comp in ((".nii.gz", True), (".nii", False)):
            _sitk_write(vol, seeds / f"ct{ext}", comp)
            _sitk_write(lab, seeds / f"labels{ext}", comp)
            made[f"ct{ext}"] = (seeds / f"ct{ext}", "ct")
            made[f"labels{ext}"] = (seeds / f"labels{ext}", "labels")
    elif family == "nrrd":
        _sitk_write(vol, seeds / "ct.nrrd", False)
        _sitk_write(vol, seeds / "ctz.nrrd", True)
        _sitk_write(lab, seeds / "labels.nrrd", True)
        raw = seeds / "ct.raw"
        raw.write_bytes(vol.astype("<i2").tobytes())
        (seeds / "ct.nhdr").write_text(
            "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 12 10 6\n"
            "space directions: (1.5,0,0) (0,1.2,0) (0,0,2)\nendian: little\nencoding: raw\n"
            "space origin: (-10,5,3)\ndata file: ct.raw\n")
        for n in ("ct.nrrd", "ctz.nrrd", "ct.nhdr"):
            made[n] = (seeds / n, "ct")
        made["labels.nrrd"] = (seeds / "labels.nrrd", "labels")
    elif family == "mha":
        _sitk_write(vol, seeds / "ct.mha", False)
        _sitk_write(vol, seeds / "ctz.mha", True)
        _sitk_write(vol, seeds / "ct.mhd", False)      # writes ct.raw beside it (ElementDataFile = ct.raw)
        _sitk_write(lab, seeds / "labels.mha", True)
        for n in ("ct.mha", "ctz.mha", "ct.mhd"):
            made[n] = (seeds / n, "ct")
        made["labels.mha"] = (seeds / "labels.mha", "labels")
    elif family == "dicom":
        files = write_dicom_series(seeds / "series")
        made["series"] = (seeds / "series", "dicom")
        made["one"] = (files[1], "dicom")
    elif family == "segnrrd":
        from engine.io import load_case, write_label_map

        _sitk_write(vol, seeds / "ref.nii.gz", True)
        case = load_case(seeds / "ref.nii.gz")
        case.labels = _labels()
        write_label_map(seeds / "labels.seg.nrrd", case)
        made["labels.seg.nrrd"] = (seeds / "labels.seg.nrrd", "labels")
    elif family == "dicomseg":
        from engine.io import load_case, write_label_map

        write_dicom_series(seeds / "series")
        case = load_case(seeds / "series")
        case.labels = _labels((4, 10, 12))
        write_label_map(seeds / "seg.dcm", case)
        made["seg.dcm"] = (seeds / "seg.dcm", "labels")
    else:
        raise SystemExit(f"unknown family {family}")
    return made


# ------------------------------------------------------------------------------------------------------------
def _text_mutations(data: bytes, draw) -> bytes:
    """Set one header line's value (NRRD 'key: value', MetaImage 'Key = Value') to an odd value."""
    head_end = data.find(b"\n\n")
    if data.startswith(b"NRRD"):
        head = data if head_end < 0 else data[:head_end]
        sep = b":"
    else:
        m = data.find(b"ElementDataFile")
        nl = data.find(b"\n", m) if m >= 0 else -1
        head = data if nl < 0 else data[:nl + 1]
        sep = b"="
    lines = head.split(b"\n")
    idx = [i for i, ln in enumerate(lines) if sep in ln]
    if not idx:
        return data
    i = draw(st.sampled_from(idx))
    key = lines[i].split(sep, 1)[0]
    value = draw(st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=20).filter(lambda s: "\n" not in s)))
    lines[i] = key + sep + b" " + value.encode("utf-8", "replace")
    return b"\n".join(lines) + data[len(head):]


NIFTI_FIELDS = [  # (offset, struct format) of NIfTI-1 header fields worth breaking
    (40, "<8h"), (70, "<h"), (72, "<h"), (76, "<8f"), (108, "<f"), (112, "<f"), (116, "<f"), (252, "<h"),
    (254, "<h"), (0, "<i"), (344, "<4s")]
ODD_INTS = [0, -1, 1, 2, 3, 7, 8, 16, 64, 255, 256, 32767, -32768]
ODD_FLOATS = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e30, 1e-30, 3.4e38]


def _nifti_field(data: bytes, draw) -> bytes:
    import gzip

    gz = data[:2] == b"\x1f\x8b"
    raw = bytearray(gzip.decompress(data) if gz else data)
    off, fmt = draw(st.sampled_from(NIFTI_FIELDS))
    n = struct.calcsize(fmt)
    count = len(struct.unpack(fmt, raw[off:off + n]))
    if "s" in fmt:
        vals = [draw(st.binary(min_size=4, max_size=4))]
    elif "f" in fmt:
        vals = [draw(st.sampled_from(ODD_FLOATS)) for _ in range(count)]
    else:
        vals = [draw(st.sampled_from(ODD_INTS)) for _ in range(count)]
    struct.pack_into(fmt, raw, off, *vals)
    return gzip.compress(bytes(raw)) if gz else bytes(raw)


def _dicom_field(data: bytes, draw) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    tag = draw(st.sampled_from(["Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
                                "SamplesPerPixel", "NumberOfFrames", "PixelSpacing", "ImagePositionPatient",
                                "ImageOrientationPatient", "RescaleSlope", "Modality", "SOPClassUID",
                                "PhotometricInterpretation", "SeriesInstanceUID", "PixelData",
                                "SegmentSequence", "PerFrameFunctionalGroupsSequence"]))
    choice = draw(st.integers(0, 5))
    try:
        if tag in ("PixelData", "SegmentSequence", "PerFrameFunctionalGroupsSequence") or choice == 0:
            if tag in ds:
                delattr(ds, tag)
        elif tag in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                     "NumberOfFrames"):
            setattr(ds, tag, draw(st.sampled_from([0, 1, 3, 12, 16, 32, 65535, 1000])))
        elif tag in ("PixelSpacing",):
            setattr(ds, tag, draw(st.sampled_from([[0, 0], [-1, 1], ["nan", "1"], [1e30, 1e30], [1]])))
        elif tag in ("ImagePositionPatient", "ImageOrientationPatient"):
            setattr(ds, tag, draw(st.sampled_from([[0, 0, 0], [0, 0, 0, 0, 0, 0], ["nan"] * 6, [1] * 6,
                                                   [1e30, 0, 0], [1, 0]])))
        elif tag == "RescaleSlope":
            ds.RescaleSlope = draw(st.sampled_from([0, -1, "1e300", "nan"]))
        else:
            setattr(ds, tag, draw(st.sampled_from(["", "MR", "SEG", "1.2.3", "x" * 64])))
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - pydicom refused to write this mutant: fall back to the bytes as they are
        return data


@st.composite
def mutated(draw, data: bytes, kind: str) -> bytes:
    ops = ["flip", "cut", "insert", "random"]
    if kind == "text":
        ops += ["field", "field", "field"]
    elif kind == "nifti":
        ops += ["field", "field", "field"]
    elif kind == "dicom":
        ops += ["field", "field"]
    op = draw(st.sampled_from(ops))
    if op == "field":
        return {"text": _text_mutations, "nifti": _nifti_field, "dicom": _dicom_field}[kind](data, draw)
    if op == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            # the header is where a reader's decisions are made: aim there most of the time
            hi = min(len(b), 600) if draw(st.booleans()) else len(b)
            pos = draw(st.integers(0, max(0, hi - 1)))
            b[pos] = draw(st.integers(0, 255))
        return bytes(b)
    if op == "cut":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if op == "insert":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(min_size=1, max_size=64)) + data[pos:]
    return draw(st.binary(max_size=2048))


def _kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return "text"
    if name.endswith(".dcm"):
        return "dicom"
    return "bytes"


def main() -> int:
    family, n, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    faulthandler.enable()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import logging
    logging.disable(logging.CRITICAL)
    from engine.errors import LiverPlanError
    from engine.io import load_case, read_label_map
    from engine.io.describe import describe_path

    seeds = build_seeds(family, work / "seeds")
    # the reference geometry label maps are read onto (the seeds' own CT)
    ref = load_case(seeds["series"][0] if family == "dicom" else
                    (work / "seeds" / "series") if family == "dicomseg" else
                    (work / "seeds" / "ref.nii.gz") if family == "segnrrd" else
                    next(p for p, how in seeds.values() if how == "ct"))
    names = sorted(seeds)
    for name in names:                       # every seed opens as it is (else the mutants test nothing)
        path, how = seeds[name]
        load_case(path) if how in ("ct", "dicom") else read_label_map(path, ref)
        describe_path(path)
    outcomes = {"opened": 0, "refused": 0}
    case_dir = work / "case"

    @settings(max_examples=n, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data) -> None:
        name = data.draw(st.sampled_from(names))
        src, how = seeds[name]
        if case_dir.exists():
            shutil.rmtree(case_dir)
        shutil.copytree(work / "seeds", case_dir)
        target = case_dir / src.relative_to(work / "seeds")
        if target.is_dir():           # a DICOM series: break one of its files
            victim = data.draw(st.sampled_from(sorted(target.iterdir())))
        else:
            victim = target
            if target.name.endswith((".nhdr", ".mhd")) and data.draw(st.booleans()):
                victim = target.with_suffix(".raw")          # or its detached data file
        victim.write_bytes(data.draw(mutated(victim.read_bytes(), _kind_of(victim))))
        before = sorted(str(p) for p in work.rglob("*"))
        for op in ("open", "describe"):
            try:
                if op == "describe":
                    describe_path(target)
                elif how in ("ct", "dicom"):
                    load_case(target)
                else:
                    read_label_map(target, ref)
                outcomes["opened"] += 1
            except LiverPlanError:
                outcomes["refused"] += 1
        after = sorted(str(p) for p in work.rglob("*"))
        assert before == after, "a reader created or removed files"

    check()
    # VmHWM: this program's peak resident memory (ru_maxrss would include the forking parent's on Linux)
    rss = int([ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]) // 1024
    print("FUZZ", json.dumps({"family": family, "examples": n, **outcomes, "max_rss_mb": rss}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
