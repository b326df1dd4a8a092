"""The Segment panel: run a (tiny) nnU-Net model in the background, cancel it, and fail readably."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from guitools import close_window, wait_idle

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def win(qapp):
    from engine.phantom import make_phantom
    from gui.main_window import MainWindow

    # On the tiny model's own spacing, so the sliding window has few tiles (seconds on a CPU).
    case = make_phantom(seed=4, shape=(32, 64, 64), spacing=(2.5, 1.6, 1.6))
    w = MainWindow(with_3d=False)
    w.show()
    w.set_case(case)
    yield w
    close_window(w)


def test_model_list_and_devices(qtbot, win):
    # Models and devices are found in the background (both need torch); the window is usable meanwhile.
    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    p = win.segment_panel
    assert p.device.itemText(0) == "auto" and p.device.findText("cpu") >= 0
    assert p.mode.currentText() == "fast"


def test_a_model_folder_that_cannot_be_used_is_named_with_its_reason(qtbot, win, tiny_model, _gui_env):
    import json

    folder = _gui_env / "models" / "abdomen" / tiny_model.path.parent.name / tiny_model.path.name
    shutil.copytree(tiny_model.path, folder)
    ds = json.loads((folder / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "spleen": 1, "kidney_left": 2, "stomach": 3, "pancreas": 4, "gallbladder": 5}
    (folder / "dataset.json").write_text(json.dumps(ds))
    try:
        qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
        n = win.segment_panel.model.count()
        win.refresh_models()
        qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
        text = win.segment_panel.status.text()
        assert "1 model folder could not be used" in text and "spleen" in text and str(folder) in text, text
        assert win.segment_panel.model.count() == n          # not offered
        win.segment_panel.set_progress("", 0)                 # what opening another case does: still said
        assert "1 model folder could not be used" in win.segment_panel.status.text()
    finally:
        shutil.rmtree(_gui_env / "models" / "abdomen")
    win.refresh_models()
    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    win.segment_panel.set_progress("", 0)
    assert "could not be used" not in win.segment_panel.status.text()     # the folder is gone: so is the note


def test_run_model_is_one_undoable_step(qtbot, win, tiny_model):
    wait_idle(qtbot, win)
    before = win.case.labels.copy()
    seen = []
    win.segment_panel.progress.valueChanged.connect(seen.append)
    win.segment_panel.device.setCurrentText("cpu")
    win.run_segmentation(tiny_model)
    assert win.segment_panel.cancel.isEnabled() and not win.segment_panel.run.isEnabled()
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=180000)
    text = win.segment_panel.status.text()
    assert text.startswith("Segmented with"), text
    assert win.case.provenance.label_source.startswith("model:")
    assert win.history.undo_description.startswith("Segmentation (")
    assert seen and max(seen) == 100
    source_model = win.case.provenance.label_source
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    assert win.segment_panel.status.text().startswith("Undone: Segmentation (")
    # what made the labels comes back with them (a DICOM SEG saved now must not name the model)
    assert win.case.provenance.label_source == "phantom"
    win.redo()
    assert win.case.provenance.label_source == source_model and not win.case.provenance.extra.get("edited")
    # the Segment tab says so (it kept "Undone: ...; the labels before it are back")
    assert win.segment_panel.status.text().startswith("Redone: Segmentation ("), win.segment_panel.status.text()
    win.undo()
    assert win.case.provenance.label_source == "phantom"
    wait_idle(qtbot, win)


def test_a_lesion_only_model_keeps_the_other_structures(qtbot, win, tiny_model, tmp_path_factory):
    # A model that segments only lesions replaces the lesions and leaves the liver and vessels the case had.
    from engine.labels import Label
    from engine.models import load_model
    from tiny_model import cached_tiny_model

    wait_idle(qtbot, win)
    lesion_model = load_model(cached_tiny_model(tmp_path_factory, "lesion", labels={"background": 0, "tumor": 1},
                                                seed=7))
    before = win.case.labels.copy()
    assert all((before == lab).any() for lab in (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.IVC))
    win.segment_panel.device.setCurrentText("cpu")
    win.run_segmentation(lesion_model)
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=180000)
    text = win.segment_panel.status.text()
    assert text.startswith("Segmented with") and "does not segment" in text, text
    assert "Portal vein" in text and "were kept" in text
    after = win.case.labels
    not_lesion = after != Label.CRLM
    # every voxel the model did not call a lesion is as before, except old lesion voxels (now the model's)
    np.testing.assert_array_equal(after[not_lesion & (before != Label.CRLM)], before[not_lesion & (before != Label.CRLM)])
    for lab in (Label.PARENCHYMA, Label.PORTAL_VEIN, Label.HEPATIC_VEINS, Label.IVC):
        assert (after == lab).any()
    win.undo()
    np.testing.assert_array_equal(win.case.labels, before)
    wait_idle(qtbot, win)


def test_opening_another_case_clears_the_last_result_message(qtbot, win):
    from engine.phantom import make_phantom

    wait_idle(qtbot, win)
    win.segment_panel.set_progress("Segmented with some model on cpu in 1.0 s.", 100)
    old = win.case
    win.set_case(make_phantom(seed=5, shape=(24, 48, 48), spacing=(2.5, 1.6, 1.6)))
    assert win.segment_panel.status.text() == "" and win.segment_panel.progress.value() == 0
    z, y, x = win.pos
    assert f"z {z}" in win.cursor_text.text()                # the readout is this case's voxel
    win.set_case(old)
    wait_idle(qtbot, win)


def test_cancel_leaves_the_case_unchanged(qtbot, win, tiny_model):
    wait_idle(qtbot, win)
    before = win.case.labels.copy()
    n_steps = len(win.history._undo)
    win.run_segmentation(tiny_model)
    win.cancel_segmentation()
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=60000)
    assert "cancelled" in win.segment_panel.status.text().lower()
    np.testing.assert_array_equal(win.case.labels, before)
    assert len(win.history._undo) == n_steps
    assert not win.segment_panel.cancel.isEnabled()


def test_broken_model_gives_a_readable_message(qtbot, win, tiny_model, tmp_path):
    from engine.models import load_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model.path, broken)
    model = load_model(broken)
    # The checkpoint goes bad after the model was listed (a damaged disk, a half-copied folder).
    for ck in broken.glob("fold_*/checkpoint_*.pth"):
        ck.write_bytes(b"this is not a checkpoint")
    before = win.case.labels.copy()
    win.run_segmentation(model)
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=60000)
    msg = win.segment_panel.status.text()
    assert "unchanged" in msg and "Traceback" not in msg
    np.testing.assert_array_equal(win.case.labels, before)


def test_install_model_package_lists_it(qtbot, win, tiny_model, tmp_path):
    import zipfile

    root = tiny_model.path.parents[1]  # the folder holding Dataset999_TinyLiver/
    zp = tmp_path / "tiny_model.zip"
    with zipfile.ZipFile(zp, "w") as z:
        for f in tiny_model.path.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(root))
    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    n = win.segment_panel.model.count()
    task = win.install_model(zp)
    qtbot.waitUntil(lambda: task.finished, timeout=60000)
    assert "installed" in win.status_text.text(), win.last_error
    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    assert win.segment_panel.model.count() == n + 1


def test_refreshing_the_model_list_keeps_the_chosen_model_and_device(qtbot, win, tiny_model, tmp_path):
    import zipfile

    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    p = win.segment_panel
    # install copies of the tiny model: a choice of models, and one card name twice
    root = tiny_model.path.parents[1]
    for name in ("copy_a", "copy_b"):
        zp = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(zp, "w") as z:
            for f in tiny_model.path.rglob("*"):
                if f.is_file():
                    z.write(f, f.relative_to(root))
        task = win.install_model(zp)
        qtbot.waitUntil(lambda: task.finished, timeout=60000)
        qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    texts = [p.model.itemText(i) for i in range(p.model.count())]
    assert sum("TinyLiver" in t for t in texts) >= 2, texts
    p.model.setCurrentIndex(p.model.count() - 1)
    chosen = p.current_model().path
    p.device.setCurrentText("cpu")
    win.refresh_models()
    qtbot.waitUntil(lambda: win.models_task is not None and win.models_task.finished, timeout=120000)
    assert p.current_model().path == chosen and p.device.currentText() == "cpu"
    # two models with one card name are told apart by their folder
    texts = [p.model.itemText(i) for i in range(p.model.count())]
    assert len(set(texts)) == len(texts), texts
    # ... at the start of the entry, which a narrow list does not cut off
    assert sum(t.startswith(("copy_a: TinyLiver", "copy_b: TinyLiver")) for t in texts) == 2, texts
    # ... and the result says which of them ran
    from engine.models import installed_name
    wait_idle(qtbot, win)
    win.run_segmentation()
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=180000)
    assert f"TinyLiver, {installed_name(chosen)}" in win.segment_panel.status.text(), win.segment_panel.status.text()
    win.undo()
    wait_idle(qtbot, win)


def test_the_window_and_the_cli_make_the_same_labels_and_provenance(qtbot, win, tiny_model, tmp_path):
    # The window applies a model's result through the session with engine.inference.apply_result, as
    # `liverplan segment` does: for the same CT and model, the same label map and the same provenance.
    import json

    import main
    from engine.io import read_label_map, write_image
    from engine.phantom import make_phantom

    ct = tmp_path / "ct.nii.gz"
    write_image(ct, make_phantom(seed=6, shape=(32, 64, 64), spacing=(2.5, 1.6, 1.6)))
    assert main.main(["segment", str(ct), "--model", str(tiny_model.path), "--out", str(tmp_path / "cli"),
                      "--device", "cpu", "--mode", "fast", "--no-progress"]) == 0
    old = win.case
    win.open_path(ct)
    qtbot.waitUntil(lambda: win.case is not old, timeout=30000)
    wait_idle(qtbot, win)
    win.segment_panel.device.setCurrentText("cpu")
    win.segment_panel.mode.setCurrentText("fast")
    win.run_segmentation(tiny_model)
    qtbot.waitUntil(lambda: not win.runner.running("segment"), timeout=180000)
    assert win.history.undo_step is not None and win.history.undo_step.kind == "segmentation"
    out = tmp_path / "window.nii.gz"
    win.save_labels(path=out, mark=False)
    qtbot.waitUntil(out.exists, timeout=20000)
    cli = read_label_map(tmp_path / "cli" / "ct_seg.nii.gz", win.case)
    assert len(np.unique(cli)) > 1, "the tiny model labelled nothing: the comparison would be empty"
    np.testing.assert_array_equal(read_label_map(out, win.case), cli)
    prov = json.loads((tmp_path / "cli" / "ct_segmentation.json").read_text())["provenance"]
    drop = ("timings_s", "date", "torch_threads")      # when, how long, on how many threads it ran
    ours = json.loads(json.dumps(win.case.provenance.extra["segmentation"], default=str))
    # the window also keeps the model's uncertainty beside the labels (engine.review.uncertainty)
    from engine.review.uncertainty import without_uncertainty
    ours, prov = without_uncertainty(ours), without_uncertainty(prov)
    assert {k: v for k, v in ours.items() if k not in drop} == {k: v for k, v in prov.items() if k not in drop}
    assert win.case.provenance.model_card["name"] == prov["models"][0]["card"]["name"]
    win.undo()
    wait_idle(qtbot, win)
