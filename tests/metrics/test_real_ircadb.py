"""One real case: 3D-IRCADb-01 patient 17's expert masks against a perturbed copy (liver region only)."""
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from realdata import real_path


@pytest.fixture(scope="module")
def ircadb():
    masks = real_path("3dircadb1.17", "masks")
    from engine.evaluation import _geometry_of
    from engine.io import read_label_map
    from engine.labelmap import LabelMapping
    geom = _geometry_of(masks / "liver.nii.gz")
    mapping = LabelMapping.preset("ircadb")
    ref = read_label_map(masks, geom, mapping)
    box = ndi.find_objects((ref > 0).astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 3), s.stop + 3) for s in box)
    return ref[box], geom, mapping


def test_real_case_against_perturbed_copy(ircadb):
    from engine.evaluation import evaluate_pair
    from engine.geometry import Geometry
    ref, geom, mapping = ircadb
    pred = ref.copy()
    liver = ndi.binary_dilation(ref == 1, iterations=1) & (pred == 0)
    pred[liver] = 1
    pred[(ref == 3)] = 4                         # predicted as IVC: the merged column must not care
    lesions = ref == 5
    lab, n = ndi.label(lesions, np.ones((3, 3, 3)))
    assert n >= 1
    pred[lab == 1] = 1                           # miss the first lesion
    g = Geometry(ref.shape, geom.spacing)
    r = evaluate_pair(pred, ref, g, mapping)
    assert "hepatic_veins+ivc" in r and r.status["ivc"] == "not_in_reference"
    assert r.status["hepatic_veins"] == "not_in_reference"
    assert r["hepatic_veins+ivc"]["dice"] == 1.0 and r["hepatic_veins+ivc"]["cldice"] == 1.0
    assert r["portal_vein"]["dice"] == 1.0 and r["portal_vein"]["betti1_error"] == 0
    assert 0.85 < r["liver"]["dice"] < 1.0
    assert 0 < r["liver"]["hd95"] <= 2 * max(geom.spacing) + 1e-6
    assert r["crlm"]["lesion_missed"] >= 1
    assert math.isfinite(r["liver"]["hd95_surface"])


def test_real_case_liver_hd95_matches_monai(ircadb):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance
    import metrics
    ref, geom, _ = ircadb
    q = ref > 0
    p = ndi.binary_erosion(q, iterations=2) | (ndi.binary_dilation(q, iterations=1) & (np.indices(q.shape)[2] < q.shape[2] // 2))
    ours = metrics.hd95(p, q, geom.spacing)
    m = compute_hausdorff_distance(torch.from_numpy(p)[None, None], torch.from_numpy(q)[None, None],
                                   include_background=True, percentile=95, spacing=list(geom.spacing)).item()
    assert ours == pytest.approx(m, rel=1e-6)
