"""Model folders, cards, label mapping, safe checkpoint loading and zip installation."""
from __future__ import annotations

import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from engine.labels import Label
from engine.models import (LABEL_MAP_FILE, MODEL_CARD_FILE, bundled_demo_model, discover_models, find_model,
                           install_model_zip, load_checkpoint, load_model, validate_model_zip)
from tiny_model import build_tiny_model, cached_tiny_model, tiny_plans


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return cached_tiny_model(tmp_path_factory)


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "userdata"
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(d))
    return d


def _copy(folder: Path, dest: Path) -> Path:
    """Copy a model's results tree (DatasetXXX/Trainer__Plans__conf) to dest; returns the model folder."""
    target = dest / folder.parent.name / folder.name
    shutil.copytree(folder, target)
    return target


def _zip_model(folder: Path, zpath: Path, extra=()) -> Path:
    """A zip laid out like nnUNetv2_export_model_to_zip's: DatasetXXX/Trainer__Plans__conf/..."""
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{folder.parent.name}/{folder.name}/{f.relative_to(folder).as_posix()}")
        for name, data in extra:
            zf.writestr(name, data)
    return zpath


# --- reading models ------------------------------------------------------------------------------
def test_model_folder_card_and_mapping_by_name(tiny):
    m = load_model(tiny.parent.parent)          # a results tree: the model folder is found inside
    assert m.path == tiny.resolve()
    assert m.configuration == "3d_fullres" and m.folds == ["0"] and m.checkpoint_name == "checkpoint_final.pth"
    assert m.card.name == "TinyLiver" and m.card.demo is False and m.card.source == "dataset.json"
    assert m.label_to_structure == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert not m.unmapped and not m.warnings
    text = m.describe()
    assert "Hepatic veins" in text and "TinyLiver" in text
    prov = m.to_provenance()
    assert prov["card"]["name"] == "TinyLiver" and prov["label_mapping"]["5"] == "crlm"


def test_card_file_is_read_and_demo_flag_shown(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    card = {"name": "LiverPlan demo", "version": "0.1", "demo": True, "not_for_clinical_use": True,
            "training_data": "40 synthetic phantoms", "labels": {"liver": 1}}
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card))
    m = load_model(folder)
    assert m.card.name == "LiverPlan demo" and m.card.demo and m.card.not_for_clinical_use
    assert "not for clinical use" in m.card.headline()
    assert m.to_provenance()["card"]["training_data"] == "40 synthetic phantoms"


def test_bundled_demo_model(tiny, tmp_path, monkeypatch):
    import engine.models as models

    res = tmp_path / "resources_models"
    monkeypatch.setattr(models, "bundled_models_dir", lambda: res)
    assert bundled_demo_model() is None
    demo_root = res / "demo"
    folder = _copy(tiny, demo_root)
    (folder / MODEL_CARD_FILE).write_text(json.dumps({"name": "demo", "version": "1", "demo": True}))
    demo = bundled_demo_model()
    assert demo is not None and demo.card.demo
    assert find_model("demo").path == demo.path


def test_totalsegmentator_style_names_map_and_others_are_listed(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "spleen": 1, "liver": 2, "portal_vein_and_splenic_vein": 3,
                    "inferior_vena_cava": 4, "kidney_left": 5}
    (folder / "dataset.json").write_text(json.dumps(ds))
    m = load_model(folder)
    assert m.label_to_structure == {2: Label.PARENCHYMA, 3: Label.PORTAL_VEIN, 4: Label.IVC}
    assert m.unmapped == {1: "spleen", 5: "kidney_left"}
    assert any("spleen" in w and "kidney_left" in w for w in m.warnings)


def test_model_with_other_labels_needs_a_map(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "organ_a": 1, "organ_b": 2, "blob": 3, "thing": 4, "other": 5}
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(ModelError) as err:
        load_model(folder)
    msg = str(err.value)
    assert "organ_a" in msg and "thing" in msg and LABEL_MAP_FILE in msg
    # an explicit map passed in ...
    m = load_model(folder, label_map={"liver": ["organ_a"], "crlm": [3], "_comment": "ours"})
    assert m.label_to_structure == {1: Label.PARENCHYMA, 3: Label.CRLM}
    assert m.mapping_source == "label map passed in"
    # ... or written beside the model
    (folder / LABEL_MAP_FILE).write_text(json.dumps({"portal_vein": [2], "hepatic_veins": ["blob"]}))
    m = load_model(folder)
    assert m.label_to_structure == {2: Label.PORTAL_VEIN, 3: Label.HEPATIC_VEINS}
    with pytest.raises(ModelError, match="spleen"):
        load_model(folder, label_map={"portal_vein": ["spleen"]})
    with pytest.raises(ModelError, match="not one of"):
        load_model(folder, label_map={"kidney": [1]})


def test_label_maps_that_cannot_be_right_are_refused_in_words(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    with pytest.raises(ModelError, match=r"9 \(for 'liver'\) is not a label of this model \(its labels: 1 'liver'"):
        load_model(folder, label_map={"liver": [9]})
    with pytest.raises(ModelError, match="label 1 is given to two structures"):
        load_model(folder, label_map={"liver": [1], "ivc": [1]})
    bad = tmp_path / "lm_badjson.json"
    bad.write_text("{liver: [1]")
    with pytest.raises(ModelError, match="label map file .*lm_badjson.json cannot be read as JSON"):
        load_model(folder, label_map=str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(ModelError, match="lm_badjson.json must hold a JSON object"):
        load_model(folder, label_map=str(bad))


def test_a_copied_in_model_that_cannot_be_used_is_reported_with_its_reason(tiny, data_dir):
    good = _copy(tiny, data_dir / "models" / "good")
    other = _copy(tiny, data_dir / "models" / "abdomen")
    ds = json.loads((other / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "spleen": 1, "kidney_left": 2, "stomach": 3, "pancreas": 4, "gallbladder": 5}
    (other / "dataset.json").write_text(json.dumps(ds))
    skipped: list = []
    found = [m.path for m in discover_models(skipped=skipped)]
    assert good in found and other not in found
    assert len(skipped) == 1 and skipped[0][0] == other
    assert "spleen" in skipped[0][1] and LABEL_MAP_FILE in skipped[0][1]


def test_missing_files_are_clear_errors(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "a")
    (folder / "plans.json").unlink()
    with pytest.raises(ModelError, match="holds no nnU-Net v2 model|plans.json"):
        load_model(folder)
    folder = _copy(tiny, tmp_path / "b")
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(ModelError, match="no trained weights"):
        load_model(folder)
    with pytest.raises(ModelError, match="no fold 3"):
        load_model(_copy(tiny, tmp_path / "c"), folds=["3"])
    with pytest.raises(ModelError, match="no model"):
        load_model(tmp_path / "nowhere")


def test_mr_model_warns_and_2d_model_is_refused(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "mr")
    ds = json.loads((folder / "dataset.json").read_text())
    ds["channel_names"] = {"0": "T2"}
    (folder / "dataset.json").write_text(json.dumps(ds))
    m = load_model(folder)
    assert any("'T2'" in w and "not CT" in w for w in m.warnings)

    folder2d = tmp_path / "two_d" / "Dataset1_X" / "nnUNetTrainer__nnUNetPlans__2d"
    folder2d.mkdir(parents=True)
    plans = tiny_plans()
    conf = plans["configurations"].pop("3d_fullres")
    conf["patch_size"] = [64, 64]
    plans["configurations"]["2d"] = conf
    (folder2d / "plans.json").write_text(json.dumps(plans))
    shutil.copy(folder / "dataset.json", folder2d / "dataset.json")
    (folder2d / "fold_0").mkdir()
    shutil.copy(tiny / "fold_0" / "checkpoint_final.pth", folder2d / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match="2D model"):
        load_model(folder2d)

    ds["channel_names"] = {"0": "CT", "1": "CT2"}
    (folder / "dataset.json").write_text(json.dumps(ds))
    with pytest.raises(ModelError, match="2 input images"):
        load_model(folder)


# --- safe checkpoint loading ------------------------------------------------------------------------
class _Evil:
    """Pickles to code that writes a marker file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_real_checkpoint_types_load_safely(tiny):
    ck = load_checkpoint(tiny / "fold_0" / "checkpoint_final.pth")
    assert "network_weights" in ck and isinstance(ck["_best_ema"], np.floating)
    assert ck["init_args"]["configuration"] == "3d_fullres"


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(tiny, tmp_path):
    import torch

    marker = tmp_path / "marker.txt"
    bad = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "payload": _Evil(str(marker))}, bad)
    with pytest.raises(ModelError) as err:
        load_checkpoint(bad)
    assert "refused" in str(err.value) and "run code" in str(err.value)
    assert not marker.exists(), "the pickled code ran"

    # the same checkpoint inside a model zip: installation refused, nothing installed, code not run
    folder = _copy(tiny, tmp_path / "m")
    shutil.copy(bad, folder / "fold_0" / "checkpoint_final.pth")
    z = _zip_model(folder, tmp_path / "evil.zip")
    root = tmp_path / "installed"
    with pytest.raises(ModelError, match="refused"):
        install_model_zip(z, dest_root=root)
    assert not marker.exists()
    assert [p.name for p in root.iterdir()] == []


def test_damaged_checkpoint(tiny, tmp_path):
    # random bytes, and a real checkpoint cut in half: "damaged", never torch's advice to load unsafely
    p = tmp_path / "broken.pth"
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="broken.pth .* is damaged or incomplete") as err:
        load_checkpoint(p)
    assert "weights_only" not in str(err.value) and "safely" not in str(err.value)
    data = (tiny / "fold_0" / "checkpoint_final.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.pth .* is damaged or incomplete.*copy or install the model again"):
        load_checkpoint(cut)


# --- zips -------------------------------------------------------------------------------------------
def test_install_zip_then_list_show_and_overwrite(tiny, tmp_path, data_dir):
    z = _zip_model(tiny, tmp_path / "tiny_model.zip")
    m = install_model_zip(z)
    assert m.path.is_relative_to(data_dir / "models" / "tiny_model")
    assert (m.path / "fold_0" / "checkpoint_final.pth").is_file()
    assert m.path in [x.path for x in discover_models()]
    assert find_model("tiny_model").path == m.path
    with pytest.raises(ModelError, match="already installed"):
        install_model_zip(z)
    m2 = install_model_zip(z, overwrite=True)
    assert m2.path == m.path
    assert not [p for p in (data_dir / "models").iterdir() if p.name.startswith(".")], "temporary folders left"


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("Dataset1_X/nnUNetTrainer__nnUNetPlans__3d_fullres/dataset.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return path


def test_bad_zips_are_refused(tiny, tmp_path):
    root = tmp_path / "installed"
    trav = _zip_model(tiny, tmp_path / "trav.zip", extra=[("../../outside.txt", "x")])
    with pytest.raises(ModelError, match="outside the model folder"):
        install_model_zip(trav, dest_root=root)
    assert not (tmp_path / "outside.txt").exists() and not (root.parent.parent / "outside.txt").exists()
    with pytest.raises(ModelError, match="symbolic link"):
        validate_model_zip(_symlink_zip(tmp_path / "link.zip"))
    with pytest.raises(ModelError, match="GB"):
        validate_model_zip(_zip_model(tiny, tmp_path / "big.zip"), max_bytes=1000)
    incomplete = tmp_path / "incomplete.zip"
    with zipfile.ZipFile(incomplete, "w") as zf:
        zf.writestr("Dataset1_X/nnUNetTrainer__nnUNetPlans__3d_fullres/dataset.json", "{}")
    with pytest.raises(ModelError, match="not an nnU-Net model package"):
        validate_model_zip(incomplete)
    notzip = tmp_path / "not.zip"
    notzip.write_text("hello")
    with pytest.raises(ModelError, match="not a valid zip"):
        validate_model_zip(notzip)
    with pytest.raises(ModelError, match="install it first"):
        load_model(notzip)
    assert not root.exists() or not any(root.iterdir())


def test_folder_with_two_configurations_prefers_3d(tmp_path):
    root = tmp_path / "results"
    build_tiny_model(root, configuration="3d_lowres")
    build_tiny_model(root, configuration="3d_fullres")
    m = load_model(root)
    assert m.configuration == "3d_fullres"
