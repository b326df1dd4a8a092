"""Two time points on a real CT: 3D-IRCADb-01 patient 17 against a deformed, shifted, re-sliced copy of
itself with one tumour erased (the known answer), and against a phantom (another patient: refused).
Skips where ../shared is absent. Slow (~1-2 minutes here): one registration per test."""
from __future__ import annotations

import numpy as np
import pytest

from realdata import real_path

pytestmark = [pytest.mark.real, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ircadb():
    root = real_path("3dircadb1.17")
    from engine.io import load_case, read_label_map
    from engine.labelmap import LabelMapping

    case = load_case(str(root / "PATIENT_DICOM.nii.gz"))
    case.set_labels(read_label_map(str(root / "masks"), case, LabelMapping.preset("ircadb")))
    return case


def test_self_copy_registered_within_2_mm_and_erased_tumour_vanished(ircadb):
    from engine.compare import Comparison
    from engine.compare.synthetic import make_followup
    from engine.labels import Label
    from engine.measure import measure

    lesions = measure(None, ircadb.labels, ircadb.geometry).lesions
    assert len(lesions) >= 2
    erased = lesions[-1].id                                     # the smallest tumour
    # re-sliced (2 mm slices, 0.8 mm pixels), shifted; a taller field of view so that the moved liver stays
    # whole (IRCADb's liver fills slices 2-114 of 119)
    fu, truth = make_followup(ircadb, {erased: ("vanish",)}, spacing=(2.0, 0.8, 0.8), fov_scale=(1.3, 0.95, 0.95),
                              fov_shift_mm=(15.0, -10.0, 0.0))
    comp = Comparison(ircadb, fu).run()
    reg = comp.registration
    liver = np.argwhere(ircadb.labels == Label.PARENCHYMA)
    pts = ircadb.geometry.index_to_physical(liver[np.random.default_rng(1).choice(len(liver), 500, replace=False)])
    err = np.linalg.norm(truth.to_baseline(reg.to_followup(pts)) - pts, axis=1)
    assert err.mean() < 2.0 and np.percentile(err, 95) < 4.0, (err.mean(), np.percentile(err, 95))
    assert reg.residual_p95_mm < WARN
    rows = {tuple(r.baseline_ids): r for r in comp.rows()}
    assert rows[(erased,)].kind == "vanished"
    back = truth.to_baseline(np.asarray(rows[(erased,)].followup_lps_mm))
    assert np.linalg.norm(back - np.asarray(truth.baseline_centroids_lps[erased])) < 5.0
    assert all(r.kind == "matched" for k, r in rows.items() if k != (erased,))
    assert not any(r.kind == "new" for r in comp.rows())


WARN = 5.0


def test_phantom_against_ircadb_refused_as_another_patient(ircadb):
    from engine.compare import Comparison, RegistrationRefused
    from engine.phantom import make_phantom

    ph = make_phantom(seed=3, shape=(112, 144, 144), n_lesions=3, lesion_diameters_mm=(30, 24, 16))
    with pytest.raises(RegistrationRefused, match="different patients") as e:
        Comparison(ph, ircadb).run()
    assert e.value.reason == "different_patient"
