"""The measurement and lesion CSVs carry the JSON's provenance as commented lines (model, "not for clinical
use", every warning), and the readers (csv with the notes skipped, pandas with comment='#') still read them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.case import Case
from engine.geometry import Geometry
from engine.labels import Label
from engine.measure import measure
from engine.report import read_csv_rows, write_measurements_csv, write_measurements_json


def _case() -> Case:
    shape = (20, 40, 40)
    img = np.full(shape, 100, np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[2:18, 5:35, 5:35] = Label.PARENCHYMA
    lab[5:9, 10:14, 10:14] = Label.CRLM
    img[5:9, 10:14, 10:14] = -75                          # a "lesion" of fat: a warning to carry
    c = Case(image=img, geometry=Geometry(shape, (2.0, 1.0, 1.0)), labels=lab, name="prov#case")
    c.provenance.source = "/data/ct.nii.gz"
    c.provenance.label_source = "model: LiverPlan demo"
    c.provenance.model_card = {"name": "LiverPlan demo", "version": "1.0", "demo": True,
                               "not_for_clinical_use": True}
    c.provenance.warnings = ["The series covers only part of the liver."]
    c.provenance.extra["edited"] = True
    return c


def test_csvs_open_with_the_provenance_the_json_has(tmp_path):
    rep = measure(_case())
    main, les = write_measurements_csv(tmp_path / "m.csv", rep)
    write_measurements_json(tmp_path / "m.json", rep)
    data = json.loads((tmp_path / "m.json").read_text())
    for path, what in ((main, "measurements"), (les, "lesion table")):
        text = path.read_text()
        notes = [l for l in text.splitlines() if l.startswith("#")]
        assert notes[0] == f"# LiverPlan {what}"
        joined = "\n".join(notes)
        assert "# Labels: model: LiverPlan demo (edited by hand)" in joined
        assert "# Model: LiverPlan demo 1.0 (demo model, synthetic data; NOT FOR CLINICAL USE)" in joined
        for w in data["provenance"]["warnings"] + data["warnings"]:
            assert f"# Warning: {w}" in joined
        assert "fat or air" in joined
        # the notes come first, then the table
        assert text.splitlines()[len(notes)].startswith("key," if what == "measurements" else "lesion,")
    rows = read_csv_rows(main)
    assert {r["key"] for r in rows} == {m["key"] for m in data["measurements"]}
    lrows = read_csv_rows(les)
    assert [int(r["lesion"]) for r in lrows] == [l["id"] for l in data["lesions"]]
    assert "fat or air" in lrows[0]["check"]
    # pandas, as a researcher reads it
    df = pd.read_csv(main, comment="#")
    assert list(df.columns) == ["key", "name", "value", "units", "description"] and len(df) == len(rows)
    dl = pd.read_csv(les, comment="#")
    assert list(dl["lesion"]) == [1]
