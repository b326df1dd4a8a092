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
