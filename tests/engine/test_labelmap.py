"""LabelMapping: presets, names, JSON files, precedence, merged references."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import InputError
from engine.labelmap import LabelMapping


def test_totalsegmentator_preset_maps_its_ids():
    m = LabelMapping.preset("totalsegmentator")
    foreign = np.array([[[0, 5, 63, 64, 52, 1]]], dtype=np.uint8)
    assert m.apply(foreign).tolist() == [[[0, 1, 4, 2, 0, 0]]]
    assert m.missing_structures() == ["hepatic_veins", "crlm"]
    assert any("splenic vein" in n for n in m.notes)


def test_ircadb_preset_precedence_lesion_over_vessels_over_parenchyma():
    m = LabelMapping.preset("ircadb")
    shape = (1, 1, 6)
    liver = np.array([[[1, 1, 1, 1, 1, 0]]], bool)           # IRCADb's liver includes tumours and vessels
    pv = np.array([[[0, 1, 0, 0, 0, 1]]], bool)              # portal trunk runs outside the liver too
    venous = np.array([[[0, 0, 1, 0, 0, 0]]], bool)
    tumour1 = np.array([[[0, 0, 0, 1, 0, 0]]], bool)
    tumour2 = np.array([[[0, 1, 0, 0, 0, 0]]], bool)         # a lesion overlapping a vessel wins
    out, ignored = m.apply_masks({"liver": liver, "portalvein": pv, "venoussystem": venous,
                                  "livertumor1": tumour1, "livertumor2": tumour2,
                                  "bone": np.ones(shape, bool)})
    assert out.tolist() == [[[1, 5, 3, 5, 1, 2]]]
    assert ignored == ["bone"]


def test_ircadb_merged_venous_system_is_documented_and_evaluable():
    m = LabelMapping.preset("ircadb")
    assert m.merged_groups == {3: (3, 4)}
    assert "ivc" in m.missing_structures() and "hepatic_veins" not in m.missing_structures()
    assert any("hepatic veins AND the inferior vena cava" in n for n in m.notes)
    pred = np.array([1, 2, 3, 4, 5, 0], dtype=np.uint8)
    assert m.merge_prediction(pred).tolist() == [1, 2, 3, 3, 5, 0]
    assert pred.tolist() == [1, 2, 3, 4, 5, 0]       # input untouched


def test_from_names_maps_synonyms_and_reports_the_rest():
    m = LabelMapping.from_names({1: "Liver", 2: "portal vein", 7: "Spleen", 9: "Inferior Vena Cava",
                                 11: "tumor"})
    arr = np.array([1, 2, 7, 9, 11, 0])
    assert m.apply(arr).tolist() == [1, 2, 0, 4, 5, 0]
    assert m.structure_for_foreign_name("inferior_vena_cava") == 4
    assert any("Spleen" in n for n in m.notes)


def test_load_json_with_ids_and_names(tmp_path):
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"liver": [1], "portal_vein": [64], "ivc": ["inferior_vena_cava"],
                             "merged_groups": {"3": [3, 4]}, "notes": ["HV+IVC merged"]}))
    m = LabelMapping.load(p)
    assert m.apply(np.array([1, 64, 63]), names={63: "inferior_vena_cava"}).tolist() == [1, 2, 4]
    assert m.merged_groups == {3: (3, 4)} and m.notes == ["HV+IVC merged"]
    assert LabelMapping.load("totalsegmentator").name == "totalsegmentator"
    assert LabelMapping.load(p).to_json_dict()["portal_vein"] == [64]


@pytest.mark.parametrize("content,words", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"spleen": [1]}', "none of the five structures"),
    ('{"liver": [1.5]}', "label numbers or names"),
])
def test_bad_mapping_files(tmp_path, content, words):
    p = tmp_path / "m.json"
    p.write_text(content)
    with pytest.raises(InputError, match=words):
        LabelMapping.load(p)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no label mapping preset"):
        LabelMapping.preset("nnunet-task08")
    with pytest.raises(InputError, match="does not exist"):
        LabelMapping.load(tmp_path / "nope.json")


def test_identity_keeps_liverplan_labels():
    arr = np.arange(8, dtype=np.uint8)
    assert LabelMapping.identity().apply(arr).tolist() == [0, 1, 2, 3, 4, 5, 6, 0]   # 6: vessel, unassigned
    assert LabelMapping.identity().missing_structures() == []
