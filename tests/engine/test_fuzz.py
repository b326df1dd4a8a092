"""The fuzz suite (issue 13): random and mutated inputs for every reader and random model packages.

Readers (NIfTI, NRRD, MHA/MHD, DICOM, .seg.nrrd, DICOM SEG): ``fuzz_readers.py`` runs as one subprocess per
reader family (a crash fails the test instead of killing pytest; an address-space limit bounds memory), with
Hypothesis mutating valid seed files. Model packages: zip layouts and plans values, in-process (no native code
reads them). Allowed outcomes: success, or an error of the project's family (InputError / ModelError...) -
never another exception, never a command run from a package, never a file outside the target folder.
Derandomized (the same examples on every run, so CI is reproducible) and bounded: about a minute on two cores.
"""
from __future__ import annotations

import copy
import io
import json
import os
import stat
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import LiverPlanError, ModelError
from tiny_model import cached_tiny_model, tiny_plans

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: examples per reader family (each opens the mutant twice: as the app opens it and as `info` describes it)
READER_EXAMPLES = int(os.environ.get("LIVERPLAN_FUZZ_EXAMPLES", "60"))
MODEL_EXAMPLES = int(os.environ.get("LIVERPLAN_FUZZ_MODEL_EXAMPLES", "60"))


@pytest.mark.parametrize("family", ["nifti", "nrrd", "mha", "dicom", "segnrrd", "dicomseg"])
def test_fuzzed_files_never_crash_a_reader(family, tmp_path):
    r = subprocess.run([sys.executable, str(HERE / "fuzz_readers.py"), family, str(READER_EXAMPLES), str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, (f"{family}: the fuzzed reader failed (rc {r.returncode}; a negative code is a "
                               f"crash):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    result = json.loads(r.stdout.split("FUZZ ", 1)[1])
    assert result["opened"] + result["refused"] == 2 * READER_EXAMPLES
    assert result["refused"] > 0             # the mutants reach the readers' refusals (the seeds all open)
    assert result["max_rss_mb"] < 2000


# --- model packages ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return cached_tiny_model(tmp_path_factory)


CONF = "3d_fullres"
#: dotted names a package could try to make nnU-Net import and call
HOSTILE_NAMES = ["os.system", "subprocess.Popen", "builtins.exec", "builtins.eval", "posix.system",
                 "shutil.rmtree", "importlib.import_module", "torch.load", "pickle.loads", "os.remove"]
ODD_JSON = st.one_of(
    st.sampled_from(HOSTILE_NAMES + [0, -1, 1, 2, 3, 10 ** 9, -(10 ** 9), 1e308, float("nan"), float("inf"), True,
                                     False, None, "", "32", [], [0], [-1, 2, 2], [1, 1, 1, 1], [[3, 3]], {},
                                     {"command": "touch MARKER"}]),
    st.integers(-10, 600), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-4, 400), max_size=7))


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list) and node and all(isinstance(v, (list, dict)) for v in node):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path


PLANS_LEAVES = sorted(_leaves(tiny_plans()), key=str)


@st.composite
def mutated_plans(draw):
    plans = copy.deepcopy(tiny_plans())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PLANS_LEAVES))
        node = plans
        for k in path[:-1]:
            node = node[k]
        value = draw(ODD_JSON)
        if isinstance(value, str) and value == "touch MARKER":
            value = {"command": "touch MARKER"}
        node[path[-1]] = value
    return plans


ZIP_PREFIXES = ["", "Dataset1_X/", "Dataset1_X/nnUNetTrainer__nnUNetPlans__3d_fullres/", "../",
                "../../escape/", "/abs/", "a/../../", "C:\\win\\", "ok/./", "a/" * 12]
EXTRA_NAMES = ["../evil.txt", "/tmp/liverplan_fuzz_evil.txt", "fold_0/../../evil.txt", "..\\evil.txt",
               "fold_all/checkpoint_final.pth", "fold_0/checkpoint_best.pth", "liverplan_model.json",
               "liverplan_label_map.json", "nested/dataset.json", "x" * 200, "fold_0/", "dataset.json"]


@st.composite
def model_zip(draw, files: dict[str, bytes]):
    """(zip bytes, plans used): the tiny model's files under a random prefix, with random extras, symbolic
    links, duplicates, missing files, damaged checkpoints and mutated plans."""
    prefix = draw(st.sampled_from(ZIP_PREFIXES))
    plans = draw(mutated_plans()) if draw(st.booleans()) else tiny_plans()
    content = dict(files)
    content["plans.json"] = json.dumps(plans).encode()
    for name in list(content):
        if draw(st.integers(0, 9)) == 0:
            del content[name]
    if draw(st.integers(0, 5)) == 0 and "fold_0/checkpoint_final.pth" in content:
        ck = bytearray(content["fold_0/checkpoint_final.pth"])
        cut = draw(st.integers(0, len(ck)))
        content["fold_0/checkpoint_final.pth"] = bytes(ck[:cut])
    if draw(st.integers(0, 4)) == 0:
        card = {"name": draw(st.one_of(st.text(max_size=20), st.sampled_from(["../../x", "", "a/b"]))),
                "demo": draw(st.one_of(st.booleans(), st.sampled_from(["yes", 1, None])))}
        content["liverplan_model.json"] = json.dumps(card).encode()
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")          # duplicate names are part of the fuzz
        for name, data in content.items():
            zf.writestr(prefix + name, data)
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(EXTRA_NAMES))
            info = zipfile.ZipInfo(name if draw(st.booleans()) else prefix + name)
            kind = draw(st.sampled_from(["file", "file", "symlink", "fifo", "dir"]))
            mode = {"file": stat.S_IFREG | 0o644, "symlink": stat.S_IFLNK | 0o777, "fifo": stat.S_IFIFO | 0o644,
                    "dir": stat.S_IFDIR | 0o755}[kind]
            info.external_attr = mode << 16
            zf.writestr(info, b"/etc/passwd" if kind == "symlink" else draw(st.binary(max_size=64)))
    return buf.getvalue(), plans


def test_fuzzed_model_packages_are_installed_or_refused_in_words(tiny, tmp_path):
    from engine.models import install_model_zip, load_model

    files = {p.relative_to(tiny).as_posix(): p.read_bytes() for p in tiny.rglob("*") if p.is_file()}
    work = tmp_path / "work"
    work.mkdir()
    counts = {"installed": 0, "refused": 0}
    reasons: list[str] = []
    n = [0]

    @settings(max_examples=MODEL_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(model_zip(files))
    def check(example) -> None:
        data, plans = example
        n[0] += 1
        case = work / f"c{n[0]}"
        dest = case / "models"
        case.mkdir()
        zp = case / "package.zip"
        zp.write_bytes(data)
        cwd = os.getcwd()
        os.chdir(case)               # a command run by the package would write MARKER here
        try:
            info = install_model_zip(zp, dest_root=dest, max_bytes=50 * 1024 ** 2)
            load_model(info.path)
            _build_like_the_pipeline(info)
            counts["installed"] += 1
        except LiverPlanError as err:
            assert str(err) and "Traceback" not in str(err)
            counts["refused"] += 1
            reasons.append(str(err)[:200])
        finally:
            os.chdir(cwd)
        # nothing outside the target folder: only the zip and the models folder (with finished models only)
        assert sorted(p.name for p in case.iterdir()) in (["package.zip"], ["models", "package.zip"])
        assert not (case / "MARKER").exists() and not (ROOT / "MARKER").exists()
        if dest.exists():
            assert not [p for p in dest.iterdir() if p.name.startswith(".")], "a temporary folder was left"
        assert not Path("/tmp/liverplan_fuzz_evil.txt").exists() and not (tmp_path / "evil.txt").exists()

    # the unmutated package installs (the fuzz's own examples may or may not include one: Hypothesis'
    # generation depends on what ran before in the session, so only safety is asserted for them)
    valid = io.BytesIO()
    with zipfile.ZipFile(valid, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"Dataset1_X/nnUNetTrainer__nnUNetPlans__3d_fullres/{name}", data)
    (tmp_path / "valid.zip").write_bytes(valid.getvalue())
    assert install_model_zip(tmp_path / "valid.zip", dest_root=tmp_path / "valid_models").name == "TinyLiver"
    check()
    assert counts["refused"] > 0, (counts, reasons[:5])


def _build_like_the_pipeline(info) -> None:
    """What the inference pipeline does with an accepted package up to the network: check the plans again and
    let nnU-Net build the network (on the meta device: no memory for the weights); its errors are the ones
    the pipeline turns into 'the weights do not fit' (ModelError)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from engine.inference.pipeline import _build_network
    from engine.model_safety import check_dataset_json, check_plans

    check_plans(info.plans, info.configuration)
    check_dataset_json(info.dataset_json)
    pm = PlansManager(info.plans)
    cm = pm.get_configuration(info.configuration)
    n_out = pm.get_label_manager(info.dataset_json).num_segmentation_heads
    try:
        with torch.device("meta"):
            _build_network("nnUNetTrainer", pm, cm, n_out, [])
    except (RuntimeError, KeyError, TypeError, ValueError, ImportError, AttributeError):
        pass     # the pipeline's own catch: ModelError "the weights ... do not fit the network"


@settings(max_examples=MODEL_EXAMPLES * 3, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(mutated_plans())
def test_fuzzed_plans_are_accepted_or_refused_naming_a_field(plans):
    from engine.model_safety import check_plans

    try:
        check_plans(plans, CONF)
    except ModelError as err:
        assert "'" in str(err) and "refused" in str(err)
        return
    # accepted: every name nnU-Net would import is one of the allow-listed torch / architecture names
    arch = plans["configurations"][CONF]["architecture"]
    for key in arch["_kw_requires_import"]:
        value = arch["arch_kwargs"][key]
        assert value is None or value.startswith(("torch.nn.", "dynamic_network_architectures."))
    assert arch["network_class_name"].startswith("dynamic_network_architectures.architectures.")
