"""Atomic writes: no half-written file, nothing overwritten unasked, normal permissions."""
import os
import stat

import pytest

from engine.errors import ExportError
from engine.io.atomic import atomic_path, write_text_atomic


def test_write_is_atomic_and_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "m.csv", "a,b\n")
    finally:
        os.umask(old)
    assert p.read_text() == "a,b\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in tmp_path.iterdir()] == ["m.csv"]


def test_existing_file_is_not_overwritten_without_asking(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("keep")
    with pytest.raises(ExportError, match="already exists"):
        write_text_atomic(p, "new")
    assert p.read_text() == "keep"
    write_text_atomic(p, "new", overwrite=True)
    assert p.read_text() == "new"


def test_failure_mid_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.nii.gz") as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def _case():
    import numpy as np

    from engine.case import Case
    from engine.geometry import Geometry
    lab = np.zeros((40, 64, 64), np.uint8)
    lab[5:35, 10:50, 10:50] = 1
    return Case(image=np.zeros(lab.shape, np.int16), geometry=Geometry(lab.shape, (2.0, 1.0, 1.0)), labels=lab)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_label_map_cut_off_by_a_full_disk_is_an_error_and_leaves_nothing(tmp_path, monkeypatch, ext):
    # ITK's writer only prints "wrote only N of M bytes" on a full disk and leaves a cut-off file, which it
    # later reads back zero-filled: the written file is checked before it takes the target's name.
    import SimpleITK as sitk

    from engine.io import write_label_map

    real = sitk.WriteImage

    def cut_off(img, name, *a, **k):
        real(img, name, *a, **k)
        size = os.path.getsize(name)
        with open(name, "r+b") as f:
            f.truncate(size // 2)

    monkeypatch.setattr(sitk, "WriteImage", cut_off)
    with pytest.raises(ExportError, match="could not be written completely.*disk may be full"):
        write_label_map(tmp_path / f"labels{ext}", _case())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sitk, "WriteImage", real)
    write_label_map(tmp_path / f"labels{ext}", _case())           # a whole write passes the check
    assert [p.name for p in tmp_path.iterdir()] == [f"labels{ext}"]


def test_a_mesh_larger_than_the_free_space_is_refused_before_the_writer_runs(tmp_path, monkeypatch):
    # VTK's XML writer crashed the process (segfault) on a full disk.
    import shutil
    from collections import namedtuple

    import pyvista as pv

    from engine.mesh import write_mesh

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2000, 2000))
    with pytest.raises(ExportError, match="The disk is full: liver.vtp needs about"):
        write_mesh(tmp_path / "liver.vtp", pv.Sphere())
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_is_said_in_words(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ExportError, match="Cannot write in the folder .*Read-only file system"):
        write_text_atomic(tmp_path / "m.csv", "a")



def test_a_temporary_file_left_by_a_killed_write_is_removed_by_the_next_write(tmp_path):
    import time

    stale = tmp_path / ".labels.nii.gz.abc123.part.nii.gz"
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    live = tmp_path / ".labels.nii.gz.def456.part.nii.gz"      # another process writing right now
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.csv.x.part.csv"
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    with atomic_path(tmp_path / "labels.nii.gz") as tmp:
        tmp.write_bytes(b"whole")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".labels.nii.gz.def456.part.nii.gz", ".other.csv.x.part.csv", "labels.nii.gz"]


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_a_write_the_image_library_refuses_is_said_in_words(tmp_path, monkeypatch, ext):
    # "Could not write labels.nrrd: [nrrd] _nrrdGzWrite: failed to write to file" was all a user was told
    import SimpleITK as sitk

    from engine.io import write_label_map

    def refuse(img, name, *a, **k):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute:\n[nrrd] _nrrdGzWrite: failed to "
                           "write to file")

    monkeypatch.setattr(sitk, "WriteImage", refuse)
    with pytest.raises(ExportError, match=r"the image writer refused it; nothing was changed \(the writer said: "
                                          r"\[nrrd\]"):
        write_label_map(tmp_path / f"labels{ext}", _case())
    assert list(tmp_path.iterdir()) == []
    import shutil
    from collections import namedtuple
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1 << 30, 1 << 30, 4096))
    with pytest.raises(ExportError, match=r"the disk is full \(0 MB free\)"):
        write_label_map(tmp_path / f"labels{ext}", _case())


def test_an_upper_case_extension_writes(tmp_path):
    # ITK refused the temporary file 'LABELS.NII.xxxx.part.NII' ("Bad Nifti file name")
    from engine.io import write_label_map

    for name in ("LABELS.NII", "LABELS.NII.GZ", "LABELS.NRRD"):
        assert write_label_map(tmp_path / name, _case()).name == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LABELS.NII", "LABELS.NII.GZ", "LABELS.NRRD"]
