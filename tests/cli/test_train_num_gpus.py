"""`train --num-gpus N`: nnU-Net's multi-GPU (DDP) training. These machines have no GPU: the refusals are
checked here, and the hand-off to torch's process spawner (one NCCL process per GPU, LiverPlan's trainer
and schedule in each) with spawn replaced by a recorder. A real multi-GPU run needs a GPU server."""
from __future__ import annotations

import pickle

import pytest

from main import main


@pytest.mark.parametrize("flags, says", [
    (["--num-gpus", "0"], "--num-gpus must be 1 or more"),
    (["--num-gpus", "2", "--time-limit", "5"], "--time-limit cannot be combined with --num-gpus"),
    (["--num-gpus", "2", "--device", "cpu"], "trains on CUDA GPUs"),
])
def test_impossible_multi_gpu_settings_are_refused_before_any_work(tmp_path, capsys, flags, says):
    work = tmp_path / "work"
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3"] + flags)
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err, err
    assert not work.exists()


def test_more_gpus_than_the_machine_has_is_said_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    work = tmp_path / "work"
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3", "--device", "cuda", "--num-gpus", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "asks for 4 CUDA GPUs, and this machine has 1" in err
    assert not work.exists()
    # --check-only only notes it (the cohort may be checked on a laptop for the GPU server)
    rc = main(["train", "--work-dir", str(work), "--phantoms", "3", "--device", "cuda", "--num-gpus", "4",
               "--check-only"])
    assert rc == 0 and "Note: --num-gpus 4 asks for 4 CUDA GPUs" in capsys.readouterr().out


def test_num_gpus_hands_nnunet_ddp_one_process_per_gpu(tmp_path, monkeypatch):
    import torch
    import torch.multiprocessing as mp

    from engine.training import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    calls = []
    monkeypatch.setattr(mp, "spawn", lambda fn, args, nprocs, join: calls.append((fn, args, nprocs, join)))
    settings = {"plans": {"dataset_name": "Dataset501_LiverPlan", "plans_name": "nnUNetPlans"},
                "configuration": "3d_fullres", "fold": 0, "dataset_json": {}, "epochs": 3,
                "iterations_per_epoch": 5, "val_iterations": 1, "oversample_foreground": 0.33, "initial_lr": 0.01,
                "continue_training": False, "init_weights": None}
    res = runner._train_ddp(2, settings, None)
    (fn, args, nprocs, join), = calls
    assert fn is runner._ddp_rank and nprocs == 2 and join and args == (2, settings)
    assert pickle.loads(pickle.dumps(args)) == args          # what each spawned process receives
    import os
    assert os.environ["MASTER_ADDR"] == "localhost" and int(os.environ["MASTER_PORT"]) > 0
    assert res.checkpoint == tmp_path / "Dataset501_LiverPlan" / "LiverPlanTrainer__nnUNetPlans__3d_fullres" / \
        "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="time limit"):
        runner._train_ddp(2, settings, 60.0)
