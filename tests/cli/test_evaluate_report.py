"""`evaluate ... --report` and `--compare OTHER_EVAL_DIR` from the command line."""
import numpy as np
import pytest
from scipy import ndimage as ndi

import main

SHAPE = (32, 48, 48)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from engine.io import write_label_map
    from engine.phantom import make_phantom

    root = tmp_path_factory.mktemp("eval_report")
    for d in ("ref", "pred_a", "pred_b"):
        (root / d).mkdir()
    for seed in (1, 2, 3):
        case = make_phantom(seed=seed, shape=SHAPE)
        ref = case.labels.copy()
        write_label_map(root / "ref" / f"c{seed}.nii.gz", case)
        a = ref.copy()
        liver = ref == 1
        a[liver & ~ndi.binary_erosion(liver)] = 0          # model A: the liver one voxel too small
        case.set_labels(a)
        write_label_map(root / "pred_a" / f"c{seed}.nii.gz", case)
        case.set_labels(ref)                               # model B: perfect
        write_label_map(root / "pred_b" / f"c{seed}.nii.gz", case)
    return root


def test_report_and_compare(cohort, capsys):
    pypdf = pytest.importorskip("pypdf")
    a, b = cohort / "eval_a", cohort / "eval_b"
    assert main.main(["evaluate", "--pred", str(cohort / "pred_a"), "--ref", str(cohort / "ref"), "--out", str(a),
                      "--report", "--worst", "1"]) == 0
    out = capsys.readouterr().out
    assert "Report:" in out and (a / "report.html").is_file() and (a / "report.pdf").is_file()
    assert (a / "evaluation.json").is_file()
    assert main.main(["evaluate", "--pred", str(cohort / "pred_b"), "--ref", str(cohort / "ref"), "--out", str(b),
                      "--compare", str(a), "--worst", "0"]) == 0
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(str(b / "comparison.pdf")).pages)
    assert "Wilcoxon" in text and "rank-biserial" in text
    from engine.metric_report import load_evaluation, paired_tests
    (t,) = [t for t in paired_tests(load_evaluation(b), load_evaluation(a)) if (t.structure, t.metric) ==
            ("liver", "dice")]
    assert t.n_pairs == 3 and t.median_diff < 0 and t.favours == "A"    # B (this run) vs A: A better here


def test_report_needs_an_out_folder_and_a_real_evaluation_to_compare(cohort, capsys):
    rc = main.main(["evaluate", "--pred", str(cohort / "pred_a"), "--ref", str(cohort / "ref"), "--report"])
    assert rc != 0 and "--out" in capsys.readouterr().err
    rc = main.main(["evaluate", "--pred", str(cohort / "pred_a"), "--ref", str(cohort / "ref"), "--out",
                    str(cohort / "x"), "--compare", str(cohort / "ref")])
    err = capsys.readouterr().err
    assert rc != 0 and "not an evaluation folder" in err
    assert not (cohort / "x").exists()                     # refused before any work
