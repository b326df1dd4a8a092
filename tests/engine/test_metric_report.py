"""The metric report on a synthetic cohort with known answers: phantom references and predictions made by
known perturbations (the liver eroded in one case, a lesion missed in another, a whole case shifted)."""
import csv
import math
import shutil
import subprocess

import numpy as np
import pytest
from scipy import ndimage as ndi

SHAPE = (40, 56, 56)
SHIFT = 3          # voxels along x in the shifted case


def _cohort(root):
    from engine.io import write_label_map
    from engine.phantom import make_phantom

    (root / "pred").mkdir(parents=True)
    (root / "ref").mkdir()
    arrays = {}
    for name, seed in (("perfect", 1), ("eroded", 2), ("missed_lesion", 3), ("shifted", 5)):
        case = make_phantom(seed=seed, shape=SHAPE, n_lesions=3 if name == "missed_lesion" else None)
        ref = case.labels.copy()
        write_label_map(root / "ref" / f"{name}.nii.gz", case)
        pred = ref.copy()
        if name == "eroded":
            liver = ref == 1
            pred[liver & ~ndi.binary_erosion(liver, iterations=2)] = 0
        elif name == "missed_lesion":
            from metrics.lesions import label_lesions
            lab, n = label_lesions(ref == 5)
            assert n >= 2
            pred[lab == 1] = 1                 # the first lesion is taken for liver: missed
        elif name == "shifted":
            pred = np.roll(ref, SHIFT, axis=2)
        case.set_labels(pred)
        write_label_map(root / "pred" / f"{name}.nii.gz", case)
        arrays[name] = (pred, ref)
    return arrays


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from engine import evaluation
    from engine.metric_report import write_metric_report

    root = tmp_path_factory.mktemp("metric_report")
    arrays = _cohort(root)
    cohort = evaluation.evaluate_cohort(root / "pred", root / "ref")
    assert not cohort.failed
    table = evaluation.cohort_table(cohort)
    evaluation.write_outputs(cohort, table, root / "eval", provenance={"pred": str(root / "pred")})
    paths, data = write_metric_report(root / "eval", worst_k=2)
    return root, arrays, paths, data


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) < 1e-9


def test_plotted_numbers_equal_the_per_case_csv(report):
    root, _, paths, data = report
    rows = _csv_rows(root / "eval" / "per_case.csv")
    assert data.distributions
    for (ev, structure, metric), pts in data.distributions.items():
        csv_vals = {r["case"]: float(r[metric]) for r in rows if r["structure"] == structure and r[metric] != ""}
        assert {c for c, _ in pts} == set(csv_vals)
        for case, v in pts:
            assert _same(v, csv_vals[case]), (structure, metric, case)
    # the figures list every evaluated case (4), infinite distances included
    assert len(data.distributions[("eval", "liver", "dice")]) == 4


def test_worst_case_is_the_perturbed_one_and_its_picture_shows_the_error(report):
    _, arrays, _, data = report
    worst = {}
    for wc in data.worst:
        worst.setdefault(wc.structure, []).append(wc)
    assert worst["liver"][0].case == "eroded"
    assert worst["portal_vein"][0].case == "shifted"
    # the perfect case is never listed as a failure
    assert all(wc.case != "perfect" for wc in data.worst)
    wc = worst["liver"][0]
    pred, ref = arrays["eroded"]
    fn_true = (ref == 1) & (pred != 1)
    # the eroded liver: only missed voxels (FN), no false positive, exactly where the erosion removed them
    assert wc.axial_fn.sum() > 0 and wc.axial_fp.sum() == 0 and wc.coronal_fp.sum() == 0
    assert np.array_equal(wc.axial_fn, fn_true[wc.z])
    assert np.array_equal(wc.coronal_fn, fn_true[:, wc.y])
    # the shifted case: its extra voxels lie SHIFT voxels to the patient's left of its missed ones
    wc = worst["portal_vein"][0]
    pred, ref = arrays["shifted"]
    fp_true = (pred == 2) & (ref != 2)
    assert wc.axial_fp.sum() > 0 and np.array_equal(wc.axial_fp, fp_true[wc.z])
    assert np.array_equal(np.roll(ref == 2, SHIFT, axis=2)[wc.z] & ~(ref == 2)[wc.z], wc.axial_fp)


def test_bland_altman_bias_is_the_mean_volume_difference(report):
    root, _, _, data = report
    rows = _csv_rows(root / "eval" / "per_case.csv")
    for (ev, structure), ba in data.bland_altman.items():
        sel = [r for r in rows if r["structure"] == structure and r["status"] not in ("both_empty", "not_in_reference")]
        d = np.array([float(r["volume_pred_ml"]) - float(r["volume_ref_ml"]) for r in sel])
        assert ba.n == len(sel)
        assert ba.bias_ml == pytest.approx(d.mean(), abs=1e-9)
        assert ba.loa_high_ml - ba.loa_low_ml == pytest.approx(2 * 1.96 * d.std(ddof=1), abs=1e-9)
    # the eroded liver is the one case with a (negative) liver volume difference besides the shift
    assert data.bland_altman[("eval", "liver")].bias_ml < 0


def test_missed_lesion_is_counted_in_its_size_bin(report):
    root, _, _, data = report
    les = [r for r in _csv_rows(root / "eval" / "lesions.csv") if r["ref_lesion"] != "false lesions"]
    bins = data.lesion_bins[("eval", "crlm")]
    assert sum(b.n for b in bins) == len(les)
    assert sum(b.detected for b in bins) == sum(int(r["detected"]) for r in les)
    missed = [r for r in les if r["case"] == "missed_lesion" and r["detected"] == "0"]
    assert len(missed) == 1
    d = float(missed[0]["diameter_mm"])
    b = next(b for b in bins if b.lo_mm <= d < b.hi_mm)
    assert b.detected < b.n
    pts = data.lesion_dice[("eval", "crlm")]
    assert ("missed_lesion", d, 0.0, False) in pts


def test_paired_test_of_identical_evaluations_reports_no_difference(report):
    from engine.metric_report import load_evaluation, paired_tests

    root, _, _, _ = report
    a, b = load_evaluation(root / "eval", "A"), load_evaluation(root / "eval", "B")
    tests = paired_tests(a, b)
    assert tests
    for t in tests:
        assert t.p_value == 1.0 and t.median_diff == 0.0 and t.rank_biserial == 0.0 and t.favours == ""


def test_paired_test_finds_a_real_difference():
    from engine.metric_report import CaseRow, Evaluation, paired_tests

    a = Evaluation("A", [CaseRow(f"c{i}", "liver", "ok", {"dice": 0.90 + 0.001 * i}) for i in range(12)])
    b = Evaluation("B", [CaseRow(f"c{i}", "liver", "ok", {"dice": 0.95 + 0.002 * i}) for i in range(12)])
    (t,) = paired_tests(a, b, ("dice",))
    assert t.p_value < 0.001 and t.rank_biserial == 1.0 and t.favours == "B"
    assert t.median_diff == pytest.approx(0.05 + 0.001 * 5.5)


def test_html_is_self_contained_and_pdf_text_reads_back(report):
    pypdf = pytest.importorskip("pypdf")
    root, _, paths, _ = report
    html = (root / "eval" / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 6 and "data:image/png;base64," in html
    # nothing is fetched from elsewhere (XML namespace names are not requests)
    import re
    assert not re.search(r"(src|href)\s*=\s*[\"'](https?:|//|file:)", html)
    assert "@import" not in html and "<script" not in html
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(str(root / "eval" / "report.pdf")).pages)
    for needle in ("Metric report", "Bland", "eroded", "shifted", "Empty masks"):
        assert needle in text


def test_names_in_any_script_print(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from engine.reporting import Document, Paragraph, Table, write_document

    names = ["Müller", "Łódź"]
    if shutil.which("fc-list") and subprocess.run(["fc-list", ":lang=ja"], capture_output=True,
                                                  text=True).stdout.strip():
        names.append("肝臓")
    doc = Document("Report " + " ".join(names), [Paragraph("Reviewed by " + ", ".join(names)),
                                                 Table(["Name", "value"], [[n, "1"] for n in names])])
    paths = write_document(doc, tmp_path)
    text = pypdf.PdfReader(str(paths[1])).pages[0].extract_text()
    for n in names:
        assert n in text
    # text from files is data, never markup
    doc = Document("<script>alert(1)</script>", [Paragraph("<b>x</b>")])
    html = write_document(doc, tmp_path / "x", formats=("html",))[0].read_text()
    assert "<script>" not in html and "&lt;b&gt;" in html


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium; "
                                                  "the Makefile's apt-deps installs it)")
def test_html_opens_in_headless_chromium(report, tmp_path):
    root, _, _, _ = report
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}"]
    dom = subprocess.run(cmd + ["--dump-dom", (root / "eval" / "report.html").as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert "Metric distributions per structure" in dom.stdout and "<svg" in dom.stdout
    subprocess.run(cmd + ["--window-size=1200,1600", f"--screenshot={shot}", (root / "eval" / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image
    im = np.asarray(Image.open(shot).convert("L"))
    assert im.std() > 10            # not blank: text and figures drawn


def test_training_curves_from_nnunet_log_and_checkpoint_dict():
    from engine.training.curves import from_logging_dict, parse_training_log

    log_text = "\n".join([
        "2026-01-01 10:00:00.000000: Epoch 0",
        "2026-01-01 10:00:00.000001: Current learning rate: 0.01",
        "2026-01-01 10:00:05.000000: train_loss 0.1234",
        "2026-01-01 10:00:05.000001: val_loss -0.05",
        "2026-01-01 10:00:05.000002: Pseudo dice [np.float32(0.8), np.float32(0.4)]",
        "2026-01-01 10:00:05.000003: Epoch time: 5.2 s",
        "2026-01-01 10:00:05.000004: Epoch 1",
        "2026-01-01 10:00:09.000000: train_loss -0.2",
        "2026-01-01 10:00:09.000001: val_loss -0.3",
        "2026-01-01 10:00:09.000002: Pseudo dice [0.9, 0.5]",
    ])
    c = parse_training_log(log_text)
    assert c.epochs == 2 and c.train_loss == [0.1234, -0.2] and c.val_loss == [-0.05, -0.3]
    assert c.pseudo_dice == pytest.approx([0.6, 0.7]) and c.pseudo_dice_ema == pytest.approx([0.6, 0.61])
    d = from_logging_dict({"train_losses": [0.5, 0.1], "val_losses": [0.4, 0.0], "mean_fg_dice": [0.2, 0.5],
                           "ema_fg_dice": [0.2, 0.23], "epoch_start_timestamps": [0, 10],
                           "epoch_end_timestamps": [8, 19]})
    assert d.epochs == 2 and d.epoch_seconds == [8, 9] and d.pseudo_dice_ema == [0.2, 0.23]


def test_without_the_pdf_writer_the_html_is_still_written(tmp_path, monkeypatch):
    from engine.errors import ExportError
    from engine.reporting import Document, Paragraph, write_document
    from engine.reporting import write as w

    monkeypatch.setattr(w, "pdf_available", lambda: "the PDF writer (the Python package 'weasyprint') is not "
                                                     "installed")
    with pytest.raises(ExportError, match="weasyprint.*HTML report was written"):
        write_document(Document("t", [Paragraph("x")]), tmp_path)
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "report.pdf").exists()


def test_comparison_of_evaluations_without_common_cases_says_so():
    from engine.metric_report import CaseRow, Evaluation, ReportData, comparison_blocks

    a = Evaluation("A", [CaseRow("c1", "liver", "ok", {"dice": 0.9})])
    b = Evaluation("B", [CaseRow("c2", "liver", "ok", {"dice": 0.8})])
    blocks = comparison_blocks(a, b, ReportData())
    assert any("nothing to compare" in getattr(x, "text", "") for x in blocks)
