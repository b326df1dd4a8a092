"""End to end on the CPU: phantoms -> nnU-Net dataset -> a few training iterations -> model package ->
predict -> evaluate -> the study's tables. Tiny phantoms and a tiny network keep it to about a minute."""
from __future__ import annotations

import json
import zipfile

import pytest

from engine.training.pipeline import TrainOptions, run_pipeline


_ENV_KEYS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_extTrainer",
             "nnUNet_n_proc_DA", "OMP_NUM_THREADS")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # The pipeline points nnU-Net's environment at its work folder and sets torch threads; put both back
    # afterwards so later tests in the same session see what they saw before.
    import os

    import torch

    saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
    saved_threads = torch.get_num_threads()
    try:
        yield _run(tmp_path_factory)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(saved_threads)


def _run(tmp_path_factory):
    work = tmp_path_factory.mktemp("train_e2e")
    opts = TrainOptions(work_dir=work, phantoms=6, phantom_shape=(32, 48, 48), phantom_spacing=(7.5, 6.67, 6.67),
                        external_phantoms=1, dataset_id=991, dataset_name="E2E", patch_size=(32, 48, 48),
                        features=(4, 8, 16), batch_size=2, device="cpu", epochs=1, iterations_per_epoch=2,
                        val_iterations=1, threads=1, zip_path=work / "model.zip", model_name="E2E model",
                        demo=True, training_data="6 tiny phantoms", command="pytest")
    messages: list[str] = []
    res = run_pipeline(opts, say=messages.append)
    return opts, res, messages


def test_dataset_and_split(tiny_run):
    opts, res, _ = tiny_run
    raw = res.dataset_dir
    ds = json.loads((raw / "dataset.json").read_text())
    assert list(ds["labels"]) == ["background", "liver", "portal_vein", "hepatic_veins", "ivc", "crlm"]
    assert len(list((raw / "imagesTr").glob("*_0000.nii.gz"))) == 6
    assert len(list((raw / "imagesTs").glob("*_0000.nii.gz"))) == 1
    splits = json.loads((res.work_dir / "nnUNet_preprocessed" / raw.name / "splits_final.json").read_text())
    assert len(splits[0]["train"]) == 5 and len(splits[0]["val"]) == 1


def test_model_package_has_card_and_slim_checkpoint(tiny_run):
    opts, res, _ = tiny_run
    m = res.model_dir
    for f in ("dataset.json", "plans.json", "fold_0/checkpoint_final.pth", "liverplan_model.json"):
        assert (m / f).is_file(), f
    card = json.loads((m / "liverplan_model.json").read_text())
    for key in ("name", "version", "demo", "not_for_clinical_use", "training_data", "labels", "trained_with",
                "command"):
        assert key in card
    assert card["demo"] is True and card["not_for_clinical_use"] is True
    assert card["labels"] == {"1": "liver", "2": "portal_vein", "3": "hepatic_veins", "4": "ivc", "5": "crlm"}
    import torch
    ck = torch.load(m / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert ck["trainer_name"] == "nnUNetTrainer" and "optimizer_state" not in ck
    assert ck["init_args"]["configuration"] == "3d_small"
    names = zipfile.ZipFile(res.zip_path).namelist()
    assert "fold_0/checkpoint_final.pth" in names and "liverplan_model.json" in names
    # the zip is written last: its card holds the held-out evaluation like the folder's
    zcard = json.loads(zipfile.ZipFile(res.zip_path).read("liverplan_model.json"))
    assert zcard == card and "test" in zcard["evaluation"]


def test_running_again_without_continue_does_not_wipe_the_finished_training(tiny_run):
    from engine.errors import InputError

    opts, res, _ = tiny_run
    fold = res.work_dir / "nnUNet_results" / res.dataset_dir.name / "LiverPlanTrainer__nnUNetPlans__3d_small" / "fold_0"
    before = (fold / "checkpoint_final.pth").stat().st_mtime_ns
    with pytest.raises(InputError, match="already holds a training.*--continue.*--overwrite"):
        run_pipeline(opts, say=lambda m: None)
    assert (fold / "checkpoint_final.pth").stat().st_mtime_ns == before


def test_package_installs_and_segments(tiny_run, tmp_path, monkeypatch):
    opts, res, _ = tiny_run
    from engine.inference import SegmentOptions, segment
    from engine.models import install_model_zip
    from engine.phantom import make_phantom

    monkeypatch.setenv("LIVERPLAN_DATA_DIR", str(tmp_path))
    model = install_model_zip(res.zip_path, dest_root=tmp_path / "models")
    assert model.is_demo
    case = make_phantom(seed=5, shape=(32, 48, 48), spacing=(7.5, 6.67, 6.67))
    out = segment(case, model, SegmentOptions(device="cpu"))
    assert out.labels.shape == case.image.shape and out.labels.dtype.name == "uint8"


def test_tables_in_the_study_layout(tiny_run):
    opts, res, messages = tiny_run
    assert set(res.tables) == {"test", "external"}
    for set_name in ("test", "external"):
        md = res.tables[set_name]["md"].read_text()
        header = md.splitlines()[0]
        for col in ("liver", "portal_vein", "hepatic_veins", "ivc", "crlm"):
            assert col in header
        assert "| Dice |" in md and "HD95" in md and "clDice" in md and "Lesion recall (>= 10 mm)" in md
        csv = res.tables[set_name]["csv"].read_text().splitlines()
        assert csv[0].startswith("metric,structure,mean,sd")
        assert any(line.startswith("dice,liver,") for line in csv)
    assert any("Training finished" in m for m in messages)
    card = json.loads((res.model_dir / "liverplan_model.json").read_text())
    assert set(card["evaluation"]) == {"test", "external"}
    assert set(card["evaluation"]["test"]["dice"]) <= {"liver", "portal_vein", "hepatic_veins", "ivc", "crlm"}


def test_continue_resumes_from_the_checkpoint(tiny_run):
    opts, res, _ = tiny_run
    opts2 = TrainOptions(**{**opts.__dict__, "continue_training": True, "epochs": 2, "evaluate": False,
                            "zip_path": None})
    res2 = run_pipeline(opts2, say=lambda m: None)
    assert res2.train.epochs_done == 2      # one more epoch on top of the first run's one


def test_missing_fold_is_refused_not_invented(tiny_run):
    from engine.errors import InputError

    opts, _, _ = tiny_run
    bad = TrainOptions(**{**opts.__dict__, "continue_training": True, "fold": 3, "evaluate": False, "zip_path": None})
    with pytest.raises(InputError, match="Fold 3 does not exist"):
        run_pipeline(bad, say=lambda m: None)


def test_init_weights_starts_a_new_phase_from_given_weights(tiny_run, tmp_path):
    """--init-weights: a new phase (epoch 0, fresh schedule) that really starts from the given weights —
    with learning rate 0 the phase ends with exactly those weights."""
    import shutil

    import torch

    opts, res, _ = tiny_run
    fold = res.work_dir / "nnUNet_results" / res.dataset_dir.name / "LiverPlanTrainer__nnUNetPlans__3d_small" / "fold_0"
    start = tmp_path / "phase1.pth"
    shutil.copyfile(fold / "checkpoint_final.pth", start)
    messages: list[str] = []
    opts2 = TrainOptions(**{**opts.__dict__, "init_weights": start, "initial_lr": 0.0, "epochs": 1,
                            "evaluate": False, "zip_path": None, "export_dir": tmp_path / "model2"})
    res2 = run_pipeline(opts2, say=messages.append)
    assert res2.train.epochs_done == 1      # a fresh schedule, not epoch 3 of the earlier runs
    assert any("new phase from" in m for m in messages)
    before = torch.load(start, map_location="cpu", weights_only=False)["network_weights"]
    after = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_init_weights_with_continue_is_refused(tiny_run, tmp_path):
    from engine.errors import InputError

    opts, res, _ = tiny_run
    bad = TrainOptions(**{**opts.__dict__, "continue_training": True, "init_weights": tmp_path / "x.pth",
                          "evaluate": False, "zip_path": None})
    with pytest.raises(InputError, match="cannot be combined with --continue"):
        run_pipeline(bad, say=lambda m: None)


def test_time_limited_training_reports_progress_in_seconds_of_its_budget(tiny_run, tmp_path):
    # With --time-limit the run ends on its budget; the progress bar must count that budget (a bar over
    # epochs x iterations showed "2,700,000 s left" for a 5-minute run). A new phase (--init-weights)
    # starts its budget at zero, so at least one epoch runs however slow the machine.
    import shutil

    opts, res, _ = tiny_run
    fold = res.work_dir / "nnUNet_results" / res.dataset_dir.name / "LiverPlanTrainer__nnUNetPlans__3d_small" / "fold_0"
    start = tmp_path / "start.pth"
    shutil.copyfile(fold / "checkpoint_final.pth", start)
    seen: list[tuple[str, int, int]] = []
    # Epochs far longer than the budget: the run must stop inside its first epoch, not finish it (on a
    # CPU one epoch of a real configuration takes many minutes; a 5-minute budget overshot by that much).
    opts2 = TrainOptions(**{**opts.__dict__, "init_weights": start, "epochs": 50, "iterations_per_epoch": 100000,
                            "time_limit_min": 0.05, "evaluate": False, "zip_path": None,
                            "export_dir": tmp_path / "model3"})
    run_pipeline(opts2, progress=lambda s, d, t: seen.append((s, d, t)), say=lambda m: None)
    budget = [(d, t) for s, d, t in seen if s.startswith("Training (seconds")]
    assert budget, sorted({s for s, _, _ in seen})
    assert all(t == 3 and 0 <= d <= 3 for d, t in budget)
    assert len(budget) < 100000   # one report per iteration: the epoch was cut short on the budget


def test_training_report_has_the_curves_and_both_sets(tiny_run):
    pypdf = pytest.importorskip("pypdf")
    from engine.training.curves import read_training_curves
    from engine.training.runner import PLANS, TRAINER

    opts, res, messages = tiny_run
    assert [p.name for p in res.report] == ["training_report.html", "training_report.pdf"]
    # the curves come from the checkpoint nnU-Net 2.8.1 wrote (its logger's per-epoch lists)
    fold = next((res.work_dir / "nnUNet_results").glob(f"*/{TRAINER}__{PLANS}__*/fold_{opts.fold}"))
    curves = read_training_curves(fold)
    assert curves is not None and curves.epochs == opts.epochs and curves.source.endswith(".pth")
    assert len(curves.train_loss) == len(curves.val_loss) == len(curves.pseudo_dice) == opts.epochs
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(str(res.report[1])).pages)
    for needle in ("Training report: E2E model", "Training curves", "Held-out test set", "External set",
                   "The study's table", "not for clinical use"):
        assert needle in text, needle
    assert any("Training report:" in m for m in messages)
