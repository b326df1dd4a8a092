"""The window with public-release stand-ins: Models > Install a folder of model zips, the model set as one choice
in the Segment tab giving the five-structure map in one action, the label-mapping dialog for a model with
other labels, extra models combined with the chosen one."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from guitools import close_window, wait_idle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from release_standins import build_standin, zip_release  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def zip_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui_standins")
    d = tmp_path_factory.mktemp("gui_zips")
    for i, k in enumerate(["ts_organs", "ts_cardiac", "ts_liver_vessels", "ts_liver_lesions", "ts_liver_segments"]):
        folder = build_standin(root, k, seed=i)
        zip_release(folder, d / f"{folder.parent.name}.zip")
    return d


@pytest.fixture(scope="module")
def coded():
    """A phantom whose CT values are its truth (label * 100 HU), so a fake network returns the truth."""
    from engine.case import Case
    from engine.phantom import make_phantom

    ph = make_phantom(seed=5, shape=(48, 80, 80), spacing=(5.0, 4.0, 4.0))
    return Case(image=ph.labels.astype(np.int16) * 100, geometry=ph.geometry), ph.labels.copy()


@pytest.fixture(scope="module")
def win(qapp, coded):
    import shutil

    from engine.paths import user_models_dir
    from gui.main_window import MainWindow

    # the data folder is shared by the session's GUI tests: take away the models installed here afterwards
    before = set(p.name for p in user_models_dir().iterdir())
    w = MainWindow(with_3d=False)
    w.show()
    w.set_case(coded[0])
    yield w
    close_window(w)
    for p in user_models_dir().iterdir():
        if p.name not in before:
            shutil.rmtree(p, ignore_errors=True)


def _fake_predict(image_src, spacing, model, dev, opts, progress, cancel, record, prov, two_stage=None):
    t = (np.asarray(image_src) // 100).astype(np.uint8)
    out = np.zeros(t.shape, np.uint8)
    if model.release == "ts_organs":
        out[np.isin(t, (1, 2, 3, 5))] = 5
    elif model.release == "ts_cardiac":
        out[t == 4] = 13
        out[t == 2] = 14
    elif model.release == "ts_liver_vessels":
        out[(t == 2) | (t == 3)] = 1
    elif model.release == "ts_liver_lesions":
        out[t == 5] = 1
    elif model.release == "ts_liver_segments":
        out[np.isin(t, (1, 2, 3, 5))] = 4
    prov["device"] = "cpu"
    return out


def _combo_texts(win):
    c = win.segment_panel.model
    return [c.itemText(i) for i in range(c.count())]


def test_install_a_folder_then_the_set_is_one_choice_and_one_action_gives_five_structures(
        qtbot, win, zip_folder, coded, monkeypatch, tmp_path):
    import engine.inference.pipeline as pipeline

    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    task = win.install_model_folder(zip_folder)
    qtbot.waitUntil(lambda: task.finished, timeout=120000)
    qtbot.waitUntil(lambda: any("TotalSegmentator liver set" in t for t in _combo_texts(win)), timeout=120000)
    texts = _combo_texts(win)
    i = next(k for k, t in enumerate(texts) if "TotalSegmentator liver set" in t)
    assert "5 parts" in texts[i]
    win.segment_panel.model.setCurrentIndex(i)
    card = win.segment_panel.card.toPlainText()
    assert "Apache-2.0" in card and "TotalSegmentator cardiac" in card
    assert "built-in maps" in win.segment_ctl.extras.summary.text()
    win.tabs.setCurrentWidget(win.segment_panel)
    win.grab().save(str(Path(os.environ.get("LIVERPLAN_SHOTS", tmp_path)) / "segment_tab_model_set.png"))

    monkeypatch.setattr(pipeline, "_predict_one", _fake_predict)
    win.run_segmentation()                                   # one action
    qtbot.waitUntil(lambda: win.segment_ctl.segment_task is not None and win.segment_ctl.segment_task.finished, timeout=120000)
    wait_idle(qtbot, win)
    labels, truth = win.case.labels, coded[1]
    for lab in (1, 2, 4, 5):
        a, b = labels == lab, truth == lab
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.9, lab
    hv = truth == 3
    assert np.isin(labels[hv], (3, 6)).mean() >= 0.9       # split, or shown as unassigned: never mislabelled
    prov = win.case.provenance
    assert len(prov.model_card["combined"]) == 5
    assert prov.extra["segmentation"]["model_set"]["name"] == "TotalSegmentator liver set"
    assert "couinaud" in win.session.extra_maps
    assert "TotalSegmentator liver set" in win.segment_panel.status.text()


def test_a_model_with_other_labels_gets_the_label_mapping_dialog(qtbot, win, tmp_path, monkeypatch):
    from engine.models import find_model

    folder = build_standin(tmp_path / "odd", "msd_vessel", seed=7)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "tree": 1, "mass": 2}
    (folder / "dataset.json").write_text(json.dumps(ds))
    z = zip_release(folder, tmp_path / "odd_labels.zip")
    asked = []

    def drive_dialog(name, labels, current=None):
        from gui.label_map_dialog import LabelMapDialog

        dlg = LabelMapDialog(name, labels, current, win)
        assert dlg.table.rowCount() == 2
        dlg.set_choice("tree", "vessels")
        dlg.set_choice("mass", "crlm")
        asked.append(labels)
        return dlg.label_map()

    monkeypatch.setattr(win.segment_ctl, "ask_label_map", drive_dialog)
    win.install_model(z)
    qtbot.waitUntil(lambda: bool(asked) and not win.runner.running("install"), timeout=60000)
    qtbot.waitUntil(lambda: _installed("odd_labels"), timeout=60000)
    assert asked[0] == {"tree": 1, "mass": 2}
    m = find_model("odd_labels")
    assert m.label_to_structure == {1: 6, 2: 5}


def _installed(name):
    from engine.paths import user_models_dir
    return (user_models_dir(create=False) / name).is_dir()


def test_the_label_map_dialog_reads_back_what_was_chosen(qtbot, win):
    from gui.label_map_dialog import LabelMapDialog

    dlg = LabelMapDialog("x", {"a": 1, "b": 2, "c": 3}, {"liver": ["a"], "none": [3]}, win)
    assert dlg.combos["a"].currentData() == "liver" and dlg.combos["c"].currentData() == "none"
    assert dlg.combos["b"].currentData() == ""
    dlg.set_choice("b", "hepatic_veins")
    assert dlg.label_map() == {"liver": ["a"], "hepatic_veins": ["b"], "none": ["c"]}
    dlg.close()


def test_two_configurations_of_one_model_are_two_entries_with_the_default_marked(qtbot, win, tmp_path):
    import zipfile

    root = tmp_path / "two"
    folders = [build_standin(root, "msd_vessel", seed=1),
               build_standin(root, "msd_vessel", seed=2, configuration="3d_lowres")]
    z = tmp_path / "two_configs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for folder in folders:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, f"{folder.parent.name}/{folder.name}/{f.relative_to(folder).as_posix()}")
    task = win.install_model(z)
    qtbot.waitUntil(lambda: task.finished, timeout=60000)
    qtbot.waitUntil(lambda: sum("two_configs" in t for t in _combo_texts(win)) == 2, timeout=60000)
    mine = [t for t in _combo_texts(win) if "two_configs" in t]
    assert len(set(mine)) == 2
    assert sum("3d_fullres, default" in t for t in mine) == 1 and sum("[3d_lowres]" in t for t in mine) == 1


def test_extra_models_and_a_label_map_from_the_segment_tab(qtbot, win, zip_folder, monkeypatch):
    from engine.models import discover_models

    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    if not any(m.release == "ts_organs" for m in discover_models()):
        task = win.install_model_folder(zip_folder)
        qtbot.waitUntil(lambda: task.finished and win.models_task.finished, timeout=120000)
    p = win.segment_panel
    idx = next(i for i in range(p.model.count())
               if (p.model.setCurrentIndex(i) or True) and getattr(p.current_model(), "release", "") == "ts_organs")
    p.model.setCurrentIndex(idx)
    organs = p.current_model()
    assert "built-in map" in win.segment_ctl.extras.summary.text()
    # Label map… (the dialog, answered): spleen is a lesion here, liver not used
    monkeypatch.setattr(win.segment_ctl, "ask_label_map", lambda name, labels, current=None: {"crlm": ["spleen"],
                                                                                 "none": ["liver"]})
    qtbot.mouseClick(win.segment_ctl.extras.label_map_button, __import__("PySide6.QtCore").QtCore.Qt.LeftButton)
    assert "yours" in win.segment_ctl.extras.summary.text()
    lesions = next(m for m in discover_models() if m.release == "ts_liver_lesions")
    win.segment_ctl.extras.set_checked(lesions, True)
    target, parts, shown = win.segment_ctl.extras.run_target(organs)
    assert [m.release for m in parts] == ["ts_organs", "ts_liver_lesions"] and isinstance(target, list)
    assert parts[0].label_to_structure == {1: 5}          # spleen -> CRLM; liver dropped
    assert "+" in shown
    win.segment_ctl.extras.set_checked(lesions, False)
    win.segment_ctl.extras.set_label_map(organs, None)
