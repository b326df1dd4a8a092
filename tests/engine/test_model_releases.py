"""Known public releases (stand-ins with their exact layouts): installed without JSON, told apart, licences
shown, ambiguous names refused, configurations listed once each, label maps (partial, preset, at install), the
old plans format, and model sets run as one model with the vessel tree split and the Couinaud map kept."""
from __future__ import annotations

import json
import warnings as _warnings

import numpy as np
import pytest

from engine.case import Case
from engine.errors import ModelError
from engine.labels import Label
from engine.models import (discover_models, find_model, find_model_set, install_model_folder, install_model_zip,
                           load_model, runs_by_default)
from release_standins import build_standin, zip_release


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "userdata"
    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    keys = ["ts_organs", "ts_cardiac", "ts_total_3mm", "ts_liver_vessels", "ts_liver_segments", "ts_liver_lesions",
            "msd_vessel"]
    return {k: build_standin(root, k, seed=i) for i, k in enumerate(keys)}


@pytest.fixture(scope="module")
def zips(standins, tmp_path_factory):
    d = tmp_path_factory.mktemp("release_zips")
    out = {}
    for k, folder in standins.items():
        name = "msd_task08_hepatic_vessel.zip" if k == "msd_vessel" else f"{folder.parent.name}.zip"
        out[k] = zip_release(folder, d / name)
    return d, out


def test_every_release_installs_from_a_folder_of_zips_without_json(data_dir, zips):
    folder, _ = zips
    done, failed = install_model_folder(folder)
    assert not failed, failed
    assert {m.release for m in done} == {"ts_organs", "ts_cardiac", "ts_total_3mm", "ts_liver_vessels",
                                         "ts_liver_segments", "ts_liver_lesions"}
    by = {("msd" if "msd_task08" in str(m.path) else m.release): m for m in done}
    assert by["ts_organs"].label_to_structure == {5: Label.PARENCHYMA}
    assert by["ts_cardiac"].label_to_structure == {13: Label.IVC, 14: Label.PORTAL_VEIN}
    assert by["ts_liver_vessels"].label_to_structure == {1: Label.VESSEL_UNASSIGNED, 2: Label.CRLM}
    assert by["msd"].label_to_structure == {1: Label.VESSEL_UNASSIGNED, 2: Label.CRLM}     # by name: Vessel, Tumour
    seg = by["ts_liver_segments"]
    assert set(seg.label_to_structure.values()) == {Label.PARENCHYMA} and seg.segment_values == {i: i for i in range(1, 9)}
    assert by["ts_liver_lesions"].configuration == "3d_fullres_high"
    assert all(m.image_reader == "NibabelIOWithReorient" for k, m in by.items() if k != "msd")
    assert by["msd"].image_reader == "SimpleITKIO"
    # distinct names: three TotalSegmentator parts and two Dataset008 exports never read alike
    names = [m.display_name for m in done]
    assert len(set(names)) == len(names), names
    # the licence is in the card and in what `models show` prints
    assert "Apache-2.0" in by["ts_organs"].card.licence and "Apache-2.0" in by["ts_organs"].describe()
    assert by["msd"].card.licence == "CC-BY-SA 4.0"
    assert "licence: CC-BY-SA 4.0" in by["msd"].describe()


def test_an_ambiguous_model_name_is_refused_with_the_candidates(data_dir, zips):
    install_model_folder(zips[0])
    with pytest.raises(ModelError) as err:
        find_model("TotalSegmentator")      # dataset.json "name" of the three parts
    msg = str(err.value)
    assert "could mean 3" in msg and "--model Dataset291" in msg and "--model Dataset293" in msg
    with pytest.raises(ModelError, match="could mean 2"):
        find_model("Dataset008_HepaticVessel")
    # a distinct name picks one
    assert find_model("Dataset293_TotalSegmentator_part3_cardiac_1559subj").release == "ts_cardiac"
    assert find_model("ts_liver_lesions").release == "ts_liver_lesions"


def test_one_entry_per_configuration_with_the_one_that_runs_marked(data_dir, standins, tmp_path):
    # an export holding two configurations of one dataset (as nnUNetv2_export_model_to_zip makes)
    root = tmp_path / "two"
    full = build_standin(root, "msd_vessel", seed=1)
    low = build_standin(root, "msd_vessel", seed=2, configuration="3d_lowres")
    import zipfile
    z = tmp_path / "msd_two_configs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for folder in (full, low):
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, f"{folder.parent.name}/{folder.name}/{f.relative_to(folder).as_posix()}")
    install_model_zip(z)
    models = [m for m in discover_models() if "msd_two_configs" in str(m.path)]
    assert len(models) == 2
    assert len({m.display_name for m in models}) == 2
    marked = [m for m in models if runs_by_default(m, models)]
    assert len(marked) == 1 and marked[0].configuration == "3d_fullres"
    assert find_model("msd_two_configs").configuration == "3d_fullres"


def test_partial_map_adds_to_names_and_presets_work_everywhere(standins, tmp_path):
    folder = standins["ts_liver_vessels"]
    # a map naming only liver_vessels keeps liver_tumor by name
    m = load_model(folder, label_map={"hepatic_veins": ["liver_vessels"]})
    assert m.label_to_structure == {1: Label.HEPATIC_VEINS, 2: Label.CRLM}
    # "none" drops a label on purpose
    m = load_model(folder, label_map={"none": ["liver_tumor"]})
    assert m.label_to_structure == {1: Label.VESSEL_UNASSIGNED}
    # presets in place of a file, for loading and for installing
    for preset in ("totalsegmentator", "ts_liver_vessels", "msd"):
        assert load_model(folder, label_map=preset).label_to_structure[2] == Label.CRLM
    with pytest.raises(ModelError, match="built-in presets: .*totalsegmentator"):
        load_model(folder, label_map="no_such_preset")


def test_unknown_labels_are_refused_without_a_map_and_installed_with_one(data_dir, standins, tmp_path):
    folder = build_standin(tmp_path / "odd", "msd_vessel", seed=3)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "structure_a": 1, "structure_b": 2}
    (folder / "dataset.json").write_text(json.dumps(ds))
    z = zip_release(folder, tmp_path / "odd.zip")
    with pytest.raises(ModelError, match="structure_a.*models install --label-map"):
        install_model_zip(z)
    m = install_model_zip(z, label_map={"vessels": ["structure_a"], "crlm": [2]})
    assert m.label_to_structure == {1: Label.VESSEL_UNASSIGNED, 2: Label.CRLM}
    # saved with the model: found again without the map
    again = find_model("odd")
    assert again.label_to_structure == m.label_to_structure


def test_old_plans_format_warns_once_not_on_every_run(standins, tmp_path, caplog):
    """TotalSegmentator v2.0's plans lack 'architecture'; nnU-Net then warns on every PlansManager use."""
    import shutil

    from engine.inference import SegmentOptions, segment
    from tiny_model import small_phantom

    src = standins["ts_organs"]
    dst = tmp_path / src.parent.name / src.name
    shutil.copytree(src, dst)
    plans = json.loads((dst / "plans.json").read_text())
    conf = plans["configurations"]["3d_fullres"]
    arch = conf.pop("architecture")["arch_kwargs"]
    conf.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": arch["features_per_stage"][0],
                 "unet_max_num_features": arch["features_per_stage"][-1],
                 "n_conv_per_stage_encoder": arch["n_conv_per_stage"],
                 "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"],
                 "num_pool_per_axis": [len(arch["strides"]) - 1] * 3, "pool_op_kernel_sizes": arch["strides"],
                 "conv_kernel_sizes": arch["kernel_sizes"]})
    (dst / "plans.json").write_text(json.dumps(plans))
    m = load_model(dst)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = segment(small_phantom(seed=2, shape=(24, 48, 48)), m, SegmentOptions(device="cpu", threads=1))
    assert not [w for w in caught if "old nnU-Net plans" in str(w.message)]
    assert res.provenance["runs"][0]["plans_format"].startswith("old")


# --- model sets ---------------------------------------------------------------------------------
def _coded_case() -> tuple[Case, np.ndarray]:
    """A phantom whose CT values ARE its truth (label * 100 HU): a fake network can read the truth back from
    whatever view or crop of the CT it is given, so the set's plumbing is tested exactly."""
    from tiny_model import small_phantom

    ph = small_phantom(seed=5, shape=(48, 80, 80), spacing=(5.0, 4.0, 4.0))   # the whole abdomen: liver is a part
    truth = ph.labels.copy()
    img = (truth.astype(np.int16) * 100)
    case = Case(image=img, geometry=ph.geometry, source_geometry=ph.source_geometry)
    return case, truth


def _fake_predict(image_src, spacing, model, dev, opts, progress, cancel, record, prov, two_stage=None):
    """What each release would output if it were perfect, in its own label values."""
    t = (np.asarray(image_src) // 100).astype(np.uint8)
    out = np.zeros(t.shape, np.uint8)
    liver = np.isin(t, (1, 2, 3, 5))
    if model.release == "ts_organs":
        out[liver] = 5
    elif model.release == "ts_cardiac":
        out[t == 4] = 13
        out[t == 2] = 14
    elif model.release == "ts_liver_vessels":
        out[(t == 2) | (t == 3)] = 1
        out[t == 5] = 2
    elif model.release == "ts_liver_lesions":
        out[t == 5] = 1
    elif model.release == "ts_liver_segments":
        # eight slabs along the model's x axis as "segments"
        xs = np.nonzero(liver.any(axis=(0, 1)))[0]
        if xs.size:
            edges = np.linspace(xs.min(), xs.max() + 1, 9)
            seg = np.digitize(np.arange(t.shape[2]), edges[1:-1]) + 1
            out[liver] = np.broadcast_to(seg, t.shape)[liver]
    prov["device"] = "cpu"
    prov["fake"] = list(image_src.shape)
    return out


def _dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2 * int((a & b).sum()) / s


def test_the_liver_set_gives_the_five_structure_map_as_one_model(data_dir, zips, monkeypatch):
    import engine.inference.pipeline as pipeline
    from engine.inference import ModelSetChoice, SegmentOptions, segment

    install_model_folder(zips[0])
    found = find_model_set("TotalSegmentator liver set")
    assert found is not None
    ms, parts, notes = found
    assert [p.release for p in parts] == ["ts_organs", "ts_cardiac", "ts_liver_vessels", "ts_liver_lesions",
                                          "ts_liver_segments"]
    monkeypatch.setattr(pipeline, "_predict_one", _fake_predict)
    case, truth = _coded_case()
    res = segment(case, ModelSetChoice(ms.name, parts, notes), SegmentOptions(device="cpu", postprocess=False))
    prov = res.provenance
    assert prov["model_set"]["name"] == "TotalSegmentator liver set"
    assert len(prov["models"]) == 5 and [r["image_reader"] for r in prov["runs"]] == ["NibabelIOWithReorient"] * 5
    # parts that only need the liver ran on its box (smaller than the CT)
    for run in prov["runs"][2:]:
        assert "liver's box" in run["set_crop"]
        assert np.prod(run["fake"]) < truth.size
    # the five structures, each where the truth has it; the intrahepatic vessels split by the tree
    for lab in (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.IVC, Label.CRLM):
        d = _dice(res.labels == lab, truth == lab)
        assert d >= 0.9, (Label(lab).name, d)
    # the hepatic veins came from the unsplit vessel model only: the split (engine.vessel_split) decided them;
    # what it could not decide is shown as "vessel, unassigned", never as another structure
    hv = truth == Label.HEPATIC_VEINS
    got = res.labels[hv]
    assert np.isin(got, (Label.HEPATIC_VEINS, Label.VESSEL_UNASSIGNED)).mean() >= 0.9
    assert prov["vessel_split"]["method"].startswith("engine.vessel_split")
    assert prov["vessel_split"]["stats"]["vessel_voxels"] == int(hv.sum())
    # the Couinaud segment map is kept for planning: 1..8 inside the liver only
    cou = res.extra_maps["couinaud"]
    assert cou.dtype == np.uint8 and cou.shape == truth.shape
    assert set(np.unique(cou)) == set(range(9))
    assert not cou[truth == 0].any()


def test_a_set_with_a_missing_part_says_what_to_install(data_dir, zips):
    _, by_key = zips
    install_model_zip(by_key["ts_organs"])
    with pytest.raises(ModelError, match="needs .*cardiac.*not installed.*install-folder"):
        find_model_set("TotalSegmentator liver set")
    assert find_model_set("no such set") is None


def test_the_set_runs_with_real_stand_in_networks(data_dir, zips):
    """The real networks (random weights) end to end: every part runs, the result is on the case's grid."""
    from engine.inference import ModelSetChoice, SegmentOptions, segment
    from tiny_model import small_phantom

    install_model_folder(zips[0])
    ms, parts, notes = find_model_set("TotalSegmentator liver set")
    ph = small_phantom(seed=6, shape=(32, 56, 56))
    res = segment(ph, ModelSetChoice(ms.name, parts, notes), SegmentOptions(device="cpu", threads=1))
    assert res.labels.shape == ph.image.shape
    assert len(res.provenance["runs"]) == 5
    assert not (res.labels == Label.VESSEL_UNASSIGNED).any() or res.provenance.get("vessel_split")
