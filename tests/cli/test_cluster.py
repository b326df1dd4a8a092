"""`segment` / `measure` / `evaluate --cluster`: a cohort on Dask distributed, on loopback only.

Four small phantoms and the tiny nnU-Net model. Every scheduler and worker here listens on 127.0.0.1; the
module's shared cluster (2 worker processes, 1 thread each) serves the tests that do not start their own.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tiny_model import small_phantom  # tests/engine, on sys.path through conftest.py

import main

pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")

SHAPE = (24, 48, 48)
SEEDS = (1, 2, 3, 4)


def _seg(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _summary(out: Path, command: str = "segment") -> dict:
    return json.loads((out / f"cluster_summary_{command}.json").read_text())


def _parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".liverplan"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """cts/ct1..4.nii.gz and refs/ct1..4.nii.gz (the phantoms' own labels)."""
    from engine.io import write_image, write_label_map

    root = tmp_path_factory.mktemp("cluster_cohort")
    (root / "cts").mkdir()
    (root / "refs").mkdir()
    for s in SEEDS:
        ph = small_phantom(seed=s, shape=SHAPE)
        write_image(root / "cts" / f"ct{s}.nii.gz", ph)
        write_label_map(root / "refs" / f"ct{s}.nii.gz", ph)
    return root


def _common(tiny: Path) -> list[str]:
    return ["--model", str(tiny), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def serial(tiny, cohort) -> Path:
    """The serial (in-process) run, one torch thread as each cluster worker has."""
    out = cohort / "serial"
    assert main.main(["segment", str(cohort / "cts"), "--out", str(out), "--threads", "1"] + _common(tiny)) == 0
    return out


@pytest.fixture(scope="module")
def cluster():
    """Two Nanny-managed worker processes on 127.0.0.1 (one thread each); a killed one is restarted."""
    from engine.cluster.connect import local_cluster

    with local_cluster(2, 1) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_local2_gives_the_serial_label_maps_and_summary(tiny, cohort, serial, capsys):
    environ = dict(os.environ)
    out = cohort / "local2"
    rc = main.main(["segment", str(cohort / "cts"), "--out", str(out), "--cluster", "local:2"] + _common(tiny))
    text = capsys.readouterr().out
    assert rc == 0, text
    for s in SEEDS:
        a, b = _seg(serial / f"ct{s}_seg.nii.gz"), _seg(out / f"ct{s}_seg.nii.gz")
        assert a.any() and np.array_equal(a, b), f"ct{s}: the cluster's labels differ from the serial run's"
        assert (serial / f"ct{s}_measurements.csv").read_text() == (out / f"ct{s}_measurements.csv").read_text()
    summary = _summary(out)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["retried"]) == (4, 0, 0, [])
    assert len(summary["per_worker"]) == 2 and sum(w["cases"] for w in summary["per_worker"].values()) == 4
    assert all(w["cases_per_hour"] > 0 for w in summary["per_worker"].values())
    # each worker loaded the model once, before its first case (its plugin): no case loaded it again
    assert not any(c["model_loaded"] for c in summary["per_case"])
    assert "4 done, 0 skipped" in text and "cases/hour per worker" in text
    assert "written by the workers into the shared folder" in text
    assert (out / "cluster_summary_segment.txt").read_text().startswith("Cohort summary (segment")
    assert _parts(out) == []
    assert dict(os.environ) == environ        # Dask's worker settings did not stay in this process


@pytest.mark.timeout(300)
def test_evaluate_local2_gives_the_serial_table(cohort, serial, tmp_path, capsys):
    args = ["evaluate", "--pred", str(serial), "--ref", str(cohort / "refs")]
    assert main.main(args + ["--out", str(tmp_path / "serial")]) == 0
    serial_text = capsys.readouterr().out
    assert main.main(args + ["--out", str(tmp_path / "cluster"), "--cluster", "local:2"]) == 0
    cluster_text = capsys.readouterr().out
    for name in ("per_case.csv", "lesions.csv", "table.csv", "table.md", "table.json"):
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "cluster" / name).read_text(), name
    table = serial_text[serial_text.index("Evaluated 4 of 4"):serial_text.index("Wrote")]
    assert table in cluster_text                     # the printed study table too
    assert _summary(tmp_path / "cluster", "evaluate")["done"] == 4


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_case_is_retried_and_leaves_no_partial_file(tiny, cluster, tmp_path, capsys):
    from distributed import Client

    from engine.cluster.worker import START_TOPIC
    from engine.io import write_image

    cts = tmp_path / "cts"
    cts.mkdir()
    for s in SEEDS:      # a little larger than the others: a case lasts long enough to be caught running
        write_image(cts / f"big{s}.nii.gz", small_phantom(seed=s, shape=(40, 80, 80)))
    out = tmp_path / "out"
    result: dict = {}

    def run():
        result["rc"] = main.main(["segment", str(cts), "--out", str(out), "--cluster", cluster.scheduler_address]
                                 + _common(tiny))

    with Client(cluster.scheduler_address, set_as_default=False) as c:
        pids = c.run(os.getpid)
        th = threading.Thread(target=run)
        th.start()
        killed = None
        deadline = time.monotonic() + 240
        while killed is None and th.is_alive() and time.monotonic() < deadline:
            running = c.processing()
            for _, ev in c.get_events(START_TOPIC):
                w = ev["worker"]
                if any(ev["case"] in str(k) for k in running.get(w, ())) and w in pids:
                    os.kill(pids[w], signal.SIGKILL)
                    killed = ev["case"]
                    break
            time.sleep(0.02)
        th.join(240)
    assert killed is not None, "no case was seen running"
    assert result.get("rc") == 0, capsys.readouterr()
    text = capsys.readouterr().out
    summary = _summary(out)
    assert summary["done"] == 4 and summary["failed"] == 0
    assert summary["retried"] == [killed]
    assert f"retried: {killed} (2 attempts" in text
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == [f"big{s}_seg.nii.gz" for s in SEEDS]
    assert _parts(out) == []                           # no half-written file, no leftover temporary file
    assert _seg(out / f"{killed}_seg.nii.gz").any()


@pytest.mark.timeout(300)
def test_resume_redoes_only_the_unfinished_cases(tiny, cohort, cluster, tmp_path, capsys):
    cts = tmp_path / "cts"
    shutil.copytree(cohort / "cts", cts)
    out = tmp_path / "out"
    base = ["segment", str(cts), "--out", str(out), "--cluster", cluster.scheduler_address] + _common(tiny)
    assert main.main(base) == 0
    kept = {s: (out / f"ct{s}_seg.nii.gz").stat().st_mtime_ns for s in SEEDS}
    # an interrupted run: ct3 got its label map but not the rest (no record); ct4's CT changed since
    (out / "ct3_measurements.json").unlink()
    (out / "ct3_segment_done.json").unlink()
    os.utime(cts / "ct4.nii.gz", ns=(time.time_ns(), time.time_ns()))
    capsys.readouterr()
    # without --resume or --overwrite nothing is replaced
    assert main.main(base) == 2
    err = capsys.readouterr().err
    assert "already have results" in err and "--resume" in err
    assert main.main(base + ["--resume"]) == 0
    summary = _summary(out)
    status = {c["name"]: c["status"] for c in summary["per_case"]}
    assert status == {"ct1": "skipped", "ct2": "skipped", "ct3": "done", "ct4": "done"}
    assert [(out / f"ct{s}_seg.nii.gz").stat().st_mtime_ns == kept[s] for s in SEEDS] == [True, True, False, False]
    assert (out / "ct3_measurements.json").is_file()
    # a finished cohort resumes to nothing
    assert main.main(base + ["--resume"]) == 0
    assert _summary(out)["skipped"] == 4


@pytest.mark.timeout(300)
def test_a_broken_ct_is_reported_and_the_others_finish(tiny, cohort, cluster, tmp_path, capsys):
    cts = tmp_path / "cts"
    cts.mkdir()
    for s in (1, 2):
        shutil.copyfile(cohort / "cts" / f"ct{s}.nii.gz", cts / f"ct{s}.nii.gz")
    (cts / "broken.nii.gz").write_bytes(b"not a CT at all" * 100)
    out = tmp_path / "out"
    rc = main.main(["segment", str(cts), "--out", str(out), "--cluster", cluster.scheduler_address, "--model",
                    str(tiny), "--device", "cpu"])
    text, err = capsys.readouterr()
    assert "segment: cases" in err and "3/3" in err          # the progress bar counts cases
    assert rc == 1
    summary = _summary(out)
    assert (summary["done"], summary["failed"]) == (2, 1)
    failed = [c for c in summary["per_case"] if c["status"] == "failed"]
    assert failed[0]["name"] == "broken" and failed[0]["reason"]
    assert "Traceback" not in failed[0]["reason"]
    assert "failed: broken: " in text
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["ct1_seg.nii.gz", "ct2_seg.nii.gz"]


@pytest.mark.timeout(300)
def test_measure_on_the_cluster_matches_serial_measure(cohort, serial, cluster, tmp_path, capsys):
    out = tmp_path / "m"
    rc = main.main(["measure", str(cohort / "cts"), str(serial), "--out", str(out), "--cluster",
                    cluster.scheduler_address])
    assert rc == 0, capsys.readouterr()
    for s in SEEDS:
        one = tmp_path / f"one{s}.csv"
        assert main.main(["measure", str(cohort / "cts" / f"ct{s}.nii.gz"), str(serial / f"ct{s}_seg.nii.gz"),
                          "--csv", str(one)]) == 0
        assert one.read_text() == (out / f"ct{s}_measurements.csv").read_text()
    assert _summary(out, "measure")["done"] == 4


# ------------------------------------------------------------------------------------------------
# clear messages within seconds, not a hang (each test has a timeout; the waits are 2 s)
@pytest.mark.timeout(60)
def test_a_scheduler_that_does_not_answer(tiny, cohort, tmp_path, capsys):
    port = _free_port()          # closed: nothing listens there
    rc = main.main(["segment", str(cohort / "cts"), "--out", str(tmp_path / "o"), "--cluster",
                    f"tcp://127.0.0.1:{port}", "--cluster-timeout", "2"] + _common(tiny))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"No Dask scheduler answered at tcp://127.0.0.1:{port} within 2 s" in err and "Traceback" not in err


@pytest.mark.timeout(60)
def test_a_cluster_with_no_workers(tiny, cohort, tmp_path, capsys):
    from distributed import Scheduler, SpecCluster

    with SpecCluster(workers={}, scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1",
                                                                          "dashboard_address": "127.0.0.1:0"}}) as empty:
        rc = main.main(["segment", str(cohort / "cts"), "--out", str(tmp_path / "o"), "--cluster",
                        empty.scheduler_address, "--cluster-timeout", "2"] + _common(tiny))
    err = capsys.readouterr().err
    assert rc == 2
    assert "has no workers (waited 2 s)" in err and "dask worker" in err
    assert not any((tmp_path / "o").glob("*_seg.nii.gz"))


def test_bad_cluster_specs_and_resume_without_cluster(tiny, cohort, tmp_path, capsys):
    base = ["segment", str(cohort / "cts"), "--out", str(tmp_path / "o")] + _common(tiny)
    assert main.main(base + ["--cluster", "local:0"]) == 2
    assert "1 or more" in capsys.readouterr().err
    assert main.main(base + ["--cluster", "mycluster"]) == 2
    assert "is not understood" in capsys.readouterr().err
    assert main.main(base + ["--cluster", f"slurm:{tmp_path / 'nosuch.yaml'}"]) == 2
    assert "no settings file" in capsys.readouterr().err
    assert main.main(base + ["--resume"]) == 2
    assert "--resume goes with --cluster" in capsys.readouterr().err


def test_slurm_settings_file_becomes_the_job_script(tmp_path):
    """The YAML a user writes for SLURM reaches dask-jobqueue (its job script; nothing is submitted)."""
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    from engine.cluster.connect import read_batch_settings

    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("queue: gpu\ncores: 8\nprocesses: 1\nmemory: 32GB\nwalltime: '04:00:00'\njobs: 4\n"
                   "job_extra_directives: ['--gres=gpu:1']\nscheduler_options: {host: 127.0.0.1, "
                   "dashboard_address: '127.0.0.1:0'}\n")
    settings = read_batch_settings(cfg)
    assert settings.pop("jobs") == 4
    with SLURMCluster(**settings) as c:
        script = c.job_script()
    assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script and "#SBATCH --mem=30G" in script


# ------------------------------------------------------------------------------------------------
def _unshare_works(hidden: Path) -> bool:
    hidden.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs none '{hidden}'"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.mark.timeout(240)
def test_a_folder_the_workers_cannot_see(tiny, cohort, serial, tmp_path, capsys):
    """A worker in its own mount namespace, where ``hidden/`` is an empty tmpfs: it cannot see what the
    client puts there. Inputs there: a clear refusal. An output folder there: results come back to the
    client, which writes them."""
    from distributed import Scheduler, SpecCluster

    hidden = tmp_path / "hidden"
    if not _unshare_works(hidden):
        pytest.skip("needs 'unshare -m' (root in a Linux mount namespace) to give a worker its own view of a folder")
    with SpecCluster(workers={}, scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1",
                                                                          "dashboard_address": "127.0.0.1:0"}}) as sched:
        cmd = (f"mount -t tmpfs none '{hidden}' && exec '{sys.executable}' -m distributed.cli.dask_worker "
               f"{sched.scheduler_address} --host 127.0.0.1 --nthreads 1 --no-nanny --no-dashboard")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(Path(main.__file__).parent),
                                                                       os.environ.get("PYTHONPATH", "")) if p))
        worker = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            address = sched.scheduler_address
            # inputs the workers cannot read: refused before anything runs
            shutil.copytree(cohort / "cts", hidden / "cts")
            rc = main.main(["segment", str(hidden / "cts"), "--out", str(tmp_path / "o"), "--cluster", address,
                            "--cluster-timeout", "60"] + _common(tiny))
            err = capsys.readouterr().err
            assert rc == 2
            assert "cannot read the inputs" in err and str(hidden / "cts") in err and "same path" in err
            # an output folder the workers cannot see: the tables come back and are written here
            out = hidden / "tables"
            rc = main.main(["measure", str(cohort / "cts"), str(serial), "--out", str(out), "--cluster", address,
                            "--cluster-timeout", "60"])
            text = capsys.readouterr().out
            assert rc == 0
            assert "returned to this computer (the workers cannot see" in text
            for s in SEEDS:
                assert "\nkey,name,value" in (out / f"ct{s}_measurements.csv").read_text()
                assert (out / f"ct{s}_measure_done.json").is_file()
            assert "returned to this computer" in _summary(out, "measure")["outputs"]
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.mark.timeout(300)
def test_a_cohort_file_is_segmented_and_measured_by_case_id(tiny, cohort, serial, cluster, tmp_path, capsys):
    csv = tmp_path / "cohort.csv"
    csv.write_text("case_id,image,reference\n"
                   + "".join(f"patient{s},{cohort / 'cts' / f'ct{s}.nii.gz'},{serial / f'ct{s}_seg.nii.gz'}\n"
                             for s in (1, 2)))
    out = tmp_path / "seg"
    assert main.main(["segment", str(csv), "--out", str(out), "--cluster", cluster.scheduler_address]
                     + _common(tiny)) == 0
    for s in (1, 2):
        assert np.array_equal(_seg(out / f"patient{s}_seg.nii.gz"), _seg(serial / f"ct{s}_seg.nii.gz"))
    tables = tmp_path / "tables"
    assert main.main(["measure", str(csv), "--out", str(tables), "--cluster", cluster.scheduler_address]) == 0
    assert sorted(p.name for p in tables.glob("*_measurements.csv")) == ["patient1_measurements.csv",
                                                                          "patient2_measurements.csv"]
    capsys.readouterr()


def test_a_model_set_is_refused_in_words_before_any_worker(tmp_path, capsys):
    """A model set's name on --cluster says that sets are not run there (not 'There is no model called')."""
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")                     # never read: the model is checked first
    rc = main.main(["segment", str(ct), "--out", str(tmp_path / "out"), "--cluster", "local:1",
                    "--model", "TotalSegmentator liver set"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "is a model set" in err and "without --cluster" in err and "There is no model" not in err
