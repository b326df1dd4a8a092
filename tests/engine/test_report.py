"""Measurement files: CSV tables a spreadsheet opens, JSON that carries the definitions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import ExportError
from engine.geometry import Geometry
from engine.measure import measure
from engine.report import lesion_table_path, read_csv_rows, write_measurements_csv, write_measurements_json


@pytest.fixture(scope="module")
def report():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:18, 2:18, 2:18] = 1
    lab[4:8, 4:8, 4:8] = 5
    lab[12:14, 12:14, 12:14] = 5
    img = np.where(lab == 5, 50, 100).astype(np.int16)
    return measure(img, lab, Geometry(lab.shape, (2.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0)))


def test_csv_tables(report, tmp_path):
    paths = write_measurements_csv(tmp_path / "case.csv", report)
    assert paths == [tmp_path / "case.csv", tmp_path / "case_lesions.csv"]
    assert lesion_table_path(tmp_path / "case.csv") == paths[1]
    rows = read_csv_rows(paths[0])
    by_key = {r["key"]: r for r in rows}
    assert float(by_key["crlm.count"]["value"]) == 2
    assert by_key["liver.total_volume_ml"]["units"] == "mL"
    assert "filled outline" in by_key["liver.total_volume_ml"]["description"]
    assert by_key["ivc.mean_hu"]["value"] == ""         # no IVC: empty cell, not "nan"
    les = read_csv_rows(paths[1])
    assert [int(r["lesion"]) for r in les] == [1, 2]
    assert float(les[0]["volume_ml"]) == pytest.approx(64 * 2 / 1000)
    assert float(les[0]["mean_hu"]) == 50


def test_json_report(report, tmp_path):
    p = write_measurements_json(tmp_path / "case.json", report)
    d = json.loads(p.read_text())          # strict JSON: no NaN
    assert d["lesion_connectivity"] == 26
    assert {"total_liver_volume", "tumour_burden", "lesion", "longest_diameter"} <= set(d["definitions"])
    assert d["geometry"]["spacing_zyx_mm"] == [2.0, 1.0, 1.0]
    assert len(d["lesions"]) == 2 and d["lesions"][0]["id"] == 1
    assert "provenance" in d and "created" in d
    ivc = [m for m in d["measurements"] if m["key"] == "ivc.mean_hu"][0]
    assert ivc["value"] is None


def test_no_silent_overwrite(report, tmp_path):
    write_measurements_json(tmp_path / "a.json", report)
    with pytest.raises(ExportError, match="already exists"):
        write_measurements_json(tmp_path / "a.json", report)
    (tmp_path / "b_lesions.csv").write_text("keep me")
    with pytest.raises(ExportError, match="already exists"):
        write_measurements_csv(tmp_path / "b.csv", report)
    assert not (tmp_path / "b.csv").exists()           # nothing half-written
    assert (tmp_path / "b_lesions.csv").read_text() == "keep me"
    write_measurements_csv(tmp_path / "b.csv", report, overwrite=True)
    assert "\nlesion," in (tmp_path / "b_lesions.csv").read_text()
