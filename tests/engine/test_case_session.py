"""The open case without Qt (engine.case_session.CaseSession): a whole session driven by a script —
open, segment with a tiny model, brush, undo, redo, evaluate, save, autosave and recover — and the
journal that keeps every committed step through a kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import edits
from engine.case_session import CaseSession
from engine.session import AutosaveStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from session_script import phantom, step  # noqa: E402
from tiny_model import cached_tiny_model, small_phantom  # noqa: E402


@pytest.fixture()
def store(tmp_path):
    return AutosaveStore(tmp_path / "data", fallback=tmp_path / "fallback")


def _events(session):
    got = []
    session.listen(lambda kind, data: got.append(kind))
    return got


def test_open_demo_measures_without_qt(store):
    s = CaseSession(store)
    heard = _events(s)
    s.open_demo()
    assert "case" in heard and s.reference is not None      # a phantom brings its ground truth
    assert not s.is_idle()
    s.derived.run_pending()
    assert s.is_idle() and s.report.value("liver.volume_ml") > 100
    assert "measurements" in heard


def test_a_whole_session_without_qt(store, tmp_path_factory, tmp_path):
    from engine.io import read_label_map
    from engine.models import load_model

    model = load_model(cached_tiny_model(tmp_path_factory))
    s = CaseSession(store)
    heard = _events(s)
    s.open_case(small_phantom(seed=1, shape=(24, 48, 48)))
    s.derived.run_pending()
    before = s.case.labels.copy()
    result, step_seg, kept = s.segment(model, device="cpu", mode="fast")
    seg = s.case.labels.copy()
    assert s.history.undo_step.kind == "segmentation"
    assert s.case.provenance.label_source == "model: TinyLiver"
    assert s.case.provenance.model_card["name"] == "TinyLiver"
    assert s.case.provenance.extra["segmentation"]["models"][0]["card"]["name"] == "TinyLiver"
    # a brush stroke on it: one step, "edited", and undo brings back the model's record with its labels
    s.begin_stroke()
    s.dab((12, 20, 10), 0, 3.0, 5)
    s.dab((12, 20, 30), 0, 3.0, 5)
    e = s.end_stroke("brush", "Brush stroke (CRLM lesions)")
    assert e.kind == "brush" and np.all(s.case.labels[12, 20, 10:31] == 5)
    assert s.case.provenance.extra["edited"] is True
    painted = s.case.labels.copy()
    s.undo()
    np.testing.assert_array_equal(s.case.labels, seg)
    assert s.case.provenance.extra["edited"] is False and s.case.provenance.label_source == "model: TinyLiver"
    s.undo()
    np.testing.assert_array_equal(s.case.labels, before)
    assert s.case.provenance.label_source == "phantom" and "segmentation" not in s.case.provenance.extra
    s.redo()
    s.redo()
    np.testing.assert_array_equal(s.case.labels, painted)
    assert s.case.provenance.extra["edited"] is True
    # measurements follow the labels
    s.derived.run_pending()
    assert s.report.value("crlm.voxels") == int(np.count_nonzero(painted == 5))
    # evaluate against the phantom's truth; an edit after it makes it stale
    ev = s.evaluate()
    assert 0.0 <= ev["liver"]["dice"] <= 1.0 and not s.evaluation_stale
    s.apply("brush", "Brush test", edits.brush, (12, 30, 30), 2.0, s.case.geometry.spacing, 2)
    assert s.evaluation_stale and "evaluation_stale" in heard
    s.undo()
    # save: marked saved only after the write; the file reads back as the labels shown
    out = tmp_path / "labels.nii.gz"
    assert s.is_modified and s.save(out)
    assert not s.is_modified and s.last_save_path == out
    np.testing.assert_array_equal(read_label_map(out, s.case), painted)
    # autosave + recover in a new session
    s.apply("fill_holes", "Fill holes", edits.brush, (10, 24, 24), 4.0, s.case.geometry.spacing, 1)
    assert s.autosave()
    edited = s.case.labels.copy()
    s2 = CaseSession(store)
    s2.open_case(small_phantom(seed=1, shape=(24, 48, 48)))
    entry = s2.find_autosave()
    assert entry is not None
    s2.restore_autosave(entry)
    np.testing.assert_array_equal(s2.case.labels, edited)
    assert s2.is_modified and s2.history.undo_step.kind == "restore"


def test_gui_and_cli_make_the_same_labels_and_provenance(store, tmp_path_factory, tmp_path):
    """The session applies a result with engine.inference.apply_result, exactly as `liverplan segment`."""
    import json

    import main
    from engine.io import read_label_map, write_image
    from engine.models import load_model

    tiny = cached_tiny_model(tmp_path_factory)
    ct = tmp_path / "ct.nii.gz"
    write_image(ct, small_phantom(seed=2, shape=(24, 48, 48)))
    assert main.main(["segment", str(ct), "--model", str(tiny), "--out", str(tmp_path / "cli"), "--device", "cpu",
                      "--mode", "fast", "--threads", "1", "--no-progress"]) == 0
    s = CaseSession(store)
    s.open_path(ct)
    s.segment(load_model(tiny), device="cpu", mode="fast")
    s.save(tmp_path / "session.nii.gz")
    cli_labels = read_label_map(tmp_path / "cli" / "ct_seg.nii.gz", s.case)
    np.testing.assert_array_equal(read_label_map(tmp_path / "session.nii.gz", s.case), cli_labels)
    cli_prov = json.loads((tmp_path / "cli" / "ct_segmentation.json").read_text())["provenance"]
    ours = s.case.provenance.extra["segmentation"]
    drop = ("timings_s", "date", "torch_threads")       # when, how long, and on how many threads it ran
    assert len(np.unique(cli_labels)) > 1, "the tiny model labelled nothing: the comparison would be empty"

    def same_run(prov):      # the options without the thread count (the CLI ran on one thread)
        out = {k: v for k, v in prov.items() if k not in drop}
        if isinstance(out.get("options"), dict):
            out["options"] = {k: v for k, v in out["options"].items() if k != "threads"}
        # the window also keeps the model's uncertainty beside the labels (engine.review.uncertainty)
        from engine.review.uncertainty import without_uncertainty
        return without_uncertainty(out)

    assert same_run(json.loads(json.dumps(ours, default=str))) == same_run(json.loads(json.dumps(cli_prov, default=str)))


def _recovered(store):
    """The labels a new session gets back from the autosave of the phantom case."""
    s = CaseSession(store)
    s.open_case(phantom())
    s.restore_autosave(s.find_autosave())
    return s.case.labels


def test_every_step_is_in_the_journal_at_once_and_undo_too(store):
    s = CaseSession(store)
    s.open_case(phantom())
    for i in range(12):
        step(s, i)
    # no autosave ran: the journal alone rebuilds the labels onto the case as opened
    np.testing.assert_array_equal(_recovered(store), s.case.labels)


def test_journal_is_compacted_by_the_autosave(store):
    s = CaseSession(store)
    s.open_case(phantom())
    for i in range(6):
        step(s, i)
    folder = s._folder
    size_before = sum(f.stat().st_size for f in folder.glob("journal-*.bin"))
    assert size_before > 0 and s.autosave()
    assert not list(folder.glob("journal-0.bin")) and list(folder.glob("snapshot-*.npz"))
    step(s, 6)
    np.testing.assert_array_equal(_recovered(store), s.case.labels)


def test_kill_9_loses_at_most_the_stroke_in_progress(tmp_path):
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(HERE / "session_script.py"), str(data)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, env=env, text=True)
    try:
        last = -1
        for line in proc.stdout:
            last = int(line) if line.strip().isdigit() else last
            if last >= 123:            # mid-run, between two compactions, strokes still coming
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # the states after each number of steps, replayed without a journal
    ref = CaseSession(journal=False, autosave_store=AutosaveStore(tmp_path / "unused"))
    ref.open_case(phantom())
    states = {}
    for i in range(last + 30):
        step(ref, i)
        states[i + 1] = ref.case.labels.copy()
    s = CaseSession(AutosaveStore(data, fallback=data / "fallback"))
    s.open_case(phantom())
    entry = s.find_autosave()
    assert entry is not None
    s.restore_autosave(entry)
    got = [n for n, lab in states.items() if np.array_equal(lab, s.case.labels)]
    # every step reported committed (last + 1 of them) is there; a few more may have been committed
    # between the print and the kill
    assert got and max(got) >= last + 1, (last, got)


def test_a_failing_autosave_is_reported_retried_and_falls_back(tmp_path, monkeypatch):
    data = tmp_path / "data"
    store = AutosaveStore(data, fallback=tmp_path / "fallback")
    s = CaseSession(store)
    problems = []
    s.listen(lambda kind, d: problems.append(d) if kind == "problem" else None)
    s.open_case(phantom())
    # the data folder becomes unwritable (a full or read-only disk): the journal fails at once
    real_append = AutosaveStore.append

    def full_disk(folder, gen, record):
        if str(folder).startswith(str(data)):
            raise OSError(28, "No space left on device")
        return real_append(folder, gen, record)

    monkeypatch.setattr(AutosaveStore, "append", staticmethod(full_disk))
    real_snapshot = AutosaveStore.write_snapshot

    def snapshot(self, folder, *a, **k):
        if str(folder).startswith(str(data)):
            raise OSError(28, "No space left on device")
        return real_snapshot(self, folder, *a, **k)

    monkeypatch.setattr(AutosaveStore, "write_snapshot", snapshot)
    step(s, 0)
    assert problems and "journal" in problems[0] and not s.journal_ok
    assert s.needs_autosave
    # the autosave retries into the fallback folder; the chain is whole again there
    assert s.autosave() and s.journal_ok and s.problem is None
    assert str(s._folder).startswith(str(tmp_path / "fallback"))
    step(s, 1)
    np.testing.assert_array_equal(_recovered(AutosaveStore(data, fallback=tmp_path / "fallback")), s.case.labels)


def test_saved_only_after_a_write_that_succeeded(store, tmp_path):
    s = CaseSession(store)
    s.open_case(phantom())
    step(s, 0)
    bad = tmp_path / "no_such_folder_file"
    bad.write_text("a file, not a folder")
    assert not s.save(bad / "labels.nii.gz")
    assert s.is_modified and s.last_save_path is None
    assert s.find_autosave() is not None          # the edits' autosave stays
    # an autosave that fails is not counted as done: the next one writes
    import engine.session as es
    orig = es.AutosaveStore.write_snapshot
    es.AutosaveStore.write_snapshot = lambda *a, **k: (_ for _ in ()).throw(OSError(30, "Read-only file system"))
    try:
        assert not s.autosave() and s.needs_autosave
    finally:
        es.AutosaveStore.write_snapshot = orig
    assert s.autosave() and not s.needs_autosave


def test_an_evaluation_of_labels_changed_while_it_ran_is_stale(store):
    s = CaseSession(store)
    s.open_case(phantom())
    fn, args = s.evaluation_job()
    step(s, 0)                                    # an edit while the metrics run
    s.set_evaluation(fn(*args))
    assert s.evaluation is not None and s.evaluation_stale
    fn, args = s.evaluation_job()
    s.set_evaluation(fn(*args))
    assert not s.evaluation_stale


def test_save_never_writes_a_new_case_over_the_last_ones_file(store, tmp_path):
    s = CaseSession(store)
    s.open_case(phantom())
    step(s, 0)
    assert s.save(tmp_path / "first.nii.gz")
    s.open_case(small_phantom(seed=2, shape=(24, 48, 48)))
    assert s.last_save_path is None and not s.save()     # Save asks where again (the window's dialog)


def test_edits_undone_back_to_the_opened_labels_leave_nothing_to_restore(store):
    s = CaseSession(store)
    s.open_case(phantom())
    step(s, 0)
    assert s.find_autosave() is not None          # in the journal at once
    s.undo()
    assert not s.is_modified
    s.close()                                     # or another case opened: nothing to offer back
    s2 = CaseSession(store)
    s2.open_case(phantom())
    assert s2.find_autosave() is None
