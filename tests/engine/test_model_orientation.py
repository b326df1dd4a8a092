"""A model runs as it was trained: the CT is given to it as its dataset's image reader would give it.

Two stand-ins with the SAME random weights differ only in the reader their plans.json/dataset.json name:
SimpleITKIO (the file as stored) and NibabelIOWithReorient (TotalSegmentator's: reoriented to RAS). On CTs
stored LPS, RAS and oblique (axes permuted), LiverPlan's labels must equal nnU-Net's own predictor's
(``predict_single_npy_array`` on the array nnU-Net's reader makes of the file, written back by that reader's
``write_seg``) at Dice >= 0.99 per label. The test could fail: the two readers' predictions differ on the
LPS-stored CT (the network is not flip-symmetric), and they have several labels.
"""
from __future__ import annotations

import numpy as np
import pytest

from tiny_model import TEST_SPACING, build_tiny_model, small_phantom

sitk = pytest.importorskip("SimpleITK")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("orientation_models")
    # same seed -> same weights; only the declared reader differs
    sitk_model = build_tiny_model(root / "sitk", spacing=TEST_SPACING, seed=11, reader="SimpleITKIO",
                                  dataset_name="Dataset901_TinySitk", trainer_name="nnUNetTrainerNoMirroring")
    ras_model = build_tiny_model(root / "ras", spacing=TEST_SPACING, seed=11, reader="NibabelIOWithReorient",
                                 dataset_name="Dataset902_TinyReorient",
                                 trainer_name="nnUNetTrainerNoMirroring")
    return {"SimpleITKIO": sitk_model, "NibabelIOWithReorient": ras_model}


def _oblique_direction() -> tuple:
    """Axes permuted (closest orientation 'SLA'-like: i ~ inferior-superior) and rotated 20 degrees."""
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    perm = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])   # columns: i->S, j->L... (x,y,z LPS)
    m = rot @ perm
    assert abs(np.linalg.det(m) - 1.0) < 1e-9 or abs(np.linalg.det(m) + 1.0) < 1e-9
    return tuple(float(v) for v in m.reshape(-1))


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    """The same phantom stored LPS, RAS and oblique (permuted + rotated) as NIfTI."""
    d = tmp_path_factory.mktemp("orientation_cts")
    ph = small_phantom(seed=7, shape=(40, 72, 72), spacing=(2.5, 1.8, 1.6))
    canon = ph.image_sitk(canonical=True)
    out = {}
    out["LPS"] = canon
    out["RAS"] = sitk.DICOMOrient(canon, "RAS")
    obl = sitk.GetImageFromArray(np.ascontiguousarray(ph.image.transpose(2, 0, 1)))  # other axis order
    obl.SetSpacing((1.6, 2.5, 1.8))
    obl.SetOrigin((-40.0, 25.0, -60.0))
    obl.SetDirection(_oblique_direction())
    out["oblique"] = obl
    paths = {}
    for k, img in out.items():
        p = d / f"ct_{k}.nii.gz"
        sitk.WriteImage(img, str(p))
        paths[k] = p
    return paths


def _nnunet_reference(model_folder, ct_path, out_path) -> np.ndarray:
    """nnU-Net's own prediction for the file (fold 0, no mirroring, tile step 0.75: LiverPlan's fast mode), on
    LiverPlan's canonical grid."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from engine.case import to_canonical

    pred = nnUNetPredictor(tile_step_size=0.75, use_gaussian=True, use_mirroring=False,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           verbose_preprocessing=False, allow_tqdm=False)
    pred.initialize_from_trained_model_folder(str(model_folder), use_folds=(0,),
                                              checkpoint_name="checkpoint_final.pth")
    # the reader as nnUNetv2_predict picks it (plans.json) and as the dataset declares it: the same here
    rw_class = pred.plans_manager.image_reader_writer_class
    assert rw_class is determine_reader_writer_from_dataset_json(pred.dataset_json, str(ct_path), verbose=False)
    rw = rw_class()
    img, props = rw.read_images([str(ct_path)])
    seg = pred.predict_single_npy_array(img, props, None, None, False)
    rw.write_seg(seg, str(out_path), props)
    return sitk.GetArrayFromImage(to_canonical(sitk.ReadImage(str(out_path))))


@pytest.fixture(scope="module")
def results(stand_ins, ct_files, tmp_path_factory):
    """{(reader, storage): (liverplan canonical labels, nnU-Net canonical labels)}."""
    from engine.inference import SegmentOptions, segment
    from engine.io import load_case
    from engine.models import load_model

    out_dir = tmp_path_factory.mktemp("orientation_out")
    res = {}
    for reader, folder in stand_ins.items():
        model = load_model(folder)
        assert model.image_reader == reader
        for storage, path in ct_files.items():
            case = load_case(path)
            ours = segment(case, model, SegmentOptions(device="cpu", threads=1, postprocess=False))
            assert ours.provenance["runs"][0]["image_reader"] == reader
            theirs = _nnunet_reference(folder, path, out_dir / f"{reader}_{storage}.nii.gz")
            assert theirs.shape == ours.labels.shape
            res[(reader, storage)] = (ours.labels, theirs)
    return res


@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIOWithReorient"])
@pytest.mark.parametrize("storage", ["LPS", "RAS", "oblique"])
def test_liverplan_equals_nnunets_own_predictor_per_label(results, reader, storage):
    ours, theirs = results[(reader, storage)]
    labels = [v for v in range(1, 6) if (theirs == v).sum() >= 50]
    assert len(labels) >= 2, f"the stand-in predicts too few labels to test anything ({np.unique(theirs)})"
    for v in labels:
        d = _dice(ours == v, theirs == v)
        assert d >= 0.99, f"{reader}, CT stored {storage}: label {v} Dice {d:.4f} against nnU-Net's predictor"


def test_the_reader_matters_so_the_test_could_fail(results):
    """On an LPS-stored CT the RAS reader flips x and y: the same network then labels other voxels. Fed as
    stored (the old behaviour) the reorient-trained model's output would disagree with nnU-Net's."""
    sitk_lps = results[("SimpleITKIO", "LPS")][1]
    ras_lps = results[("NibabelIOWithReorient", "LPS")][1]
    diffs = [_dice(sitk_lps == v, ras_lps == v) for v in range(1, 6) if (ras_lps == v).sum() >= 50]
    assert diffs and min(diffs) < 0.9, diffs
    # stored RAS, both readers give the network the same array: the same labels
    a, b = results[("SimpleITKIO", "RAS")][1], results[("NibabelIOWithReorient", "RAS")][1]
    assert np.array_equal(a, b)


def test_reader_declared_by_files():
    from engine.inference.orientation import model_reader

    assert model_reader({"overwrite_image_reader_writer": "NibabelIOWithReorient"}, {})[0] == "NibabelIOWithReorient"
    assert model_reader({}, {"image_reader_writer": "NibabelIO"}) == ("NibabelIO", None)
    assert model_reader({}, {}) == ("SimpleITKIO", None)
    reader, warning = model_reader({"overwrite_image_reader_writer": "NibabelIOWithReorient"},
                                   {"image_reader_writer": "SimpleITKIO"})
    assert reader == "NibabelIOWithReorient" and "plans.json" in warning
    reader, warning = model_reader({}, {"image_reader_writer": "MyReader"})
    assert "does not know" in warning


# --- real CTs: the view LiverPlan gives a model is exactly the array nnU-Net's reader makes of the file --------
@pytest.mark.parametrize("parts", [("3dircadb1.17", "PATIENT_DICOM.nii.gz"),
                                   ("totalsegmentator", "example_ct_sm.nii.gz")])
@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIOWithReorient"])
def test_real_ct_view_equals_nnunets_reader_and_maps_back_through_its_writer(real, parts, reader, tmp_path):
    """On real headers (IRCADb 1.17 is stored LPS): the array and spacing LiverPlan gives the model equal what
    nnU-Net's reader returns, voxel for voxel; a label map made on that array, written by nnU-Net's own writer
    and read back, lands where LiverPlan's mapping back puts it."""
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    from engine.case import to_canonical
    from engine.inference.orientation import model_view
    from engine.io import load_case

    path = real(*parts)
    case = load_case(path)
    view = model_view(case, reader)
    rw = recursive_find_reader_writer_by_name(reader)()
    arr, props = rw.read_images([str(path)])
    assert arr.shape[1:] == view.array.shape
    assert np.array_equal(arr[0], view.array.astype(np.float32))
    assert np.allclose(props["spacing"], view.spacing, rtol=1e-5)
    # a label map on the model's array: something not symmetric (the body's right half and a slab)
    seg = np.zeros(view.array.shape, np.uint8)
    seg[view.array > 100] = 1
    seg[: seg.shape[0] // 3, :, : seg.shape[2] // 4] = 2
    out = tmp_path / "seg.nii.gz"
    rw.write_seg(seg, str(out), props)
    theirs = sitk.GetArrayFromImage(to_canonical(sitk.ReadImage(str(out))))
    assert np.array_equal(view.to_canonical(seg), theirs)
