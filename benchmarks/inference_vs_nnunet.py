"""LiverPlan's in-process inference vs nnU-Net's own `nnUNetv2_predict`, same model, same CT, one run.

For each mode it runs, as separate processes, side by side:
  * ``python main.py segment CT --model M --out D --device cpu --mode MODE --no-postprocess`` (loads the
    model, predicts, writes the label map *and* the measurements), and
  * ``nnUNetv2_predict -i IN -o OUT -d DATASET -c CONF -f 0 -device cpu`` with nnUNet_results pointing to
    a temporary copy of the model (``--disable_tta -step_size 0.75`` for "fast"; defaults for "accurate"),
and prints per-structure Dice between the two label maps, the wall-clock ratio (process start to exit:
loading and writing included), the ratio of CPU seconds (user + system of each process tree: steadier than
wall time on a shared machine), peak memory (the sum of the resident memory of the process and all its
children, sampled every 50 ms from /proc, plus getrusage's largest single process) and the load average.

LiverPlan variants (``--variants``): default; body-crop (fast mode); whole-ct (accurate, --no-liver-crop);
bf16 (accurate, --no-liver-crop --cpu-bf16); before (``--before-tree DIR``: an older copy of the code).
``--repeat N`` interleaves N rounds of nnU-Net + the variants and prints the median of the per-round ratios.

Without ``--model``: a small nnU-Net (features 4-32, 4 stages, patch 48 x 96 x 96, spacing 2.5 x 1.5 x 1.5 mm
so that resampling matters) trained for a few minutes on synthetic phantoms (``--train-steps``), built once
and cached in the work folder. The CT: the IRCADb patient (512 x 512 x 119, 0.74 mm) when ../shared is
present, else a 512 x 512 x 100 phantom.

    .venv/bin/python benchmarks/inference_vs_nnunet.py --modes fast accurate --variants default
        --model COPY_OF_MODEL --ct CT --work DIR [--repeat 2] [--before-tree OLD_TREE]      (one line)

Results go to stdout and to WORK/results.json (figures for scratch/note_inference.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))
VENV_BIN = Path(sys.executable).parent

MODEL_SPACING = (2.5, 1.5, 1.5)
MODEL_PATCH = (48, 96, 96)
MODEL_FEATURES = (4, 8, 16, 32)


def tree_rss_sampler(pid: int, stop: threading.Event, out: dict) -> None:
    """Peak of the summed RSS (bytes) of ``pid`` and all its descendants, sampled from /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    peak = 0
    while not stop.is_set():
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                continue
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * page
            except (OSError, ValueError):
                pass
            todo.extend(children.get(p, []))
        peak = max(peak, total)
        stop.wait(0.05)
    out["peak_tree_rss"] = peak


def run_measured(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a fresh wrapper process; wall time, peak tree RSS and getrusage max RSS."""
    wrapper = ("import resource, subprocess, sys, json\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(json.dumps({'rc': r.returncode, 'maxrss_kb': u.ru_maxrss, "
               "'cpu_s': u.ru_utime + u.ru_stime}), file=sys.stderr)\n")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    stop, res = threading.Event(), {}
    th = threading.Thread(target=tree_rss_sampler, args=(p.pid, stop, res), daemon=True)
    th.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    last = [ln for ln in err.strip().splitlines() if ln.startswith("{")]
    info = json.loads(last[-1]) if last else {"rc": p.returncode, "maxrss_kb": 0}
    if info["rc"] != 0:
        raise SystemExit(f"command failed ({info['rc']}): {' '.join(cmd)}\n{out[-2000:]}\n{err[-4000:]}")
    return {"wall_s": wall, "cpu_s": info.get("cpu_s", 0.0), "peak_tree_rss_mb": res.get("peak_tree_rss", 0) / 2 ** 20,
            "max_single_rss_mb": info["maxrss_kb"] / 1024, "stdout": out[-1500:]}


def build_model(work: Path, steps: int) -> Path:
    """The benchmark model (cached): tiny nnU-Net trained briefly on phantoms at the model spacing."""
    from engine.phantom import make_phantom
    from tiny_model import build_tiny_model

    done = work / "model" / ".built"
    if done.exists():
        return Path(done.read_text())
    import torch

    vols = []
    t0 = time.perf_counter()
    for seed in (11, 12):
        c = make_phantom(seed=seed, shape=(96, 160, 160), spacing=MODEL_SPACING)
        vols.append((c.image, c.labels))
        print(f"phantom {seed} built ({time.perf_counter() - t0:.0f} s)", flush=True)
    t0 = time.perf_counter()
    torch.set_num_threads(1)   # the shared 2-core machines slow down badly with 2 threads under load
    folder = build_tiny_model(work / "model", patch=MODEL_PATCH, features=MODEL_FEATURES, spacing=MODEL_SPACING,
                              train_on=vols, train_steps=steps, train_patch=(32, 64, 64))
    print(f"built benchmark model ({steps} training steps) in {time.perf_counter() - t0:.0f} s: {folder}")
    done.write_text(str(folder))
    return folder


def dice_per_label(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    out = {}
    for lab in range(1, 6):
        x, y = a == lab, b == lab
        s = int(x.sum()) + int(y.sum())
        out[lab] = float("nan") if s == 0 else 2.0 * int((x & y).sum()) / s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["fast", "accurate"], choices=["fast", "accurate"])
    ap.add_argument("--ct", help="CT file (default: IRCADb 1.17 from ../shared, else a 512x512x100 phantom)")
    ap.add_argument("--work", help="work folder (default: a temporary folder; the model is cached there)")
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--cancel-latency", action="store_true",
                    help="instead: measure in-process cancel latency (press Cancel 0.2 s into each stage, time "
                         "until Cancelled is raised) with LiverPlan's engine, fast mode, on the CT")
    ap.add_argument("--variants", nargs="+", default=["default", "body-crop"], choices=[v for v, _, _ in VARIANTS],
                    help="which LiverPlan variants to run (body-crop: fast mode only; whole-ct (--no-liver-crop) "
                         "and bf16 (--cpu-bf16, with --no-liver-crop): accurate mode only)")
    ap.add_argument("--extra-args", default="", help="more arguments for every LiverPlan run (one string)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run nnU-Net and the LiverPlan variants this many times, interleaved (the shared machines' "
                         "load changes by minutes: the summary gives the median ratio of the pairs)")
    ap.add_argument("--before-tree", help="also run variant 'before': main.py of this folder (an older copy of the "
                                          "code), with its own default options")
    ap.add_argument("--model", help="use this nnU-Net model folder (e.g. resources/models/demo) instead of "
                                    "building the small benchmark model")
    args = ap.parse_args()

    import SimpleITK as sitk

    if args.cancel_latency:
        return cancel_latency(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model).resolve() if args.model else build_model(work, args.train_steps)

    ct = Path(args.ct) if args.ct else REPO.parent / "shared" / "data" / "real" / "3dircadb1.17" / "PATIENT_DICOM.nii.gz"
    if not ct.exists():
        from engine.io import write_image
        from engine.phantom import make_phantom

        ct = work / "phantom_512.nii.gz"
        if not ct.exists():
            write_image(ct, make_phantom(seed=21, shape=(100, 512, 512), spacing=(2.5, 0.7, 0.7)))
    img = sitk.ReadImage(str(ct))
    print(f"CT: {ct} ({'x'.join(map(str, img.GetSize()))} voxels, spacing {tuple(round(s, 3) for s in img.GetSpacing())} mm)")
    print(f"model: {model}")

    # nnU-Net's input layout and its results tree (a temporary copy: nnUNet_results points there)
    nn_in = work / "nnunet_in"
    nn_in.mkdir(exist_ok=True)
    case_in = nn_in / "case_0000.nii.gz"
    if not case_in.exists():
        shutil.copy(ct, case_in)
    from engine.models import load_checkpoint, load_model

    info = load_model(model)
    trainer = str(load_checkpoint(info.checkpoint_paths()[0])["trainer_name"])
    plans_name = info.plans.get("plans_name", "nnUNetPlans")
    dataset = info.plans.get("dataset_name") or model.parent.name
    conf = info.configuration
    results = work / "nnunet_results"
    if results.exists():
        shutil.rmtree(results)
    # nnU-Net's results layout: nnUNet_results/DatasetXXX/Trainer__Plans__configuration/
    shutil.copytree(info.path, results / dataset / f"{trainer}__{plans_name}__{conf}")
    env = dict(os.environ, nnUNet_results=str(results), nnUNet_raw=str(work / "raw"),
               nnUNet_preprocessed=str(work / "pre"), PYTHONUNBUFFERED="1")
    plans = plans_name

    rows = []
    variants = list(VARIANTS)
    if args.before_tree:
        variants.append(("before", [], ("fast", "accurate")))
        args.variants = [*args.variants, "before"]
    for mode, repeat in [(m, k) for m in args.modes for k in range(args.repeat)]:
        nn_out = work / f"nnunet_{mode}"
        if nn_out.exists():
            shutil.rmtree(nn_out)
        nn_cmd = [str(VENV_BIN / "nnUNetv2_predict"), "-i", str(nn_in), "-o", str(nn_out), "-d", dataset, "-c", conf,
                  "-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu"]
        if mode == "fast":
            nn_cmd += ["--disable_tta", "-step_size", "0.75"]
        print(f"\n[{mode}] nnUNetv2_predict ...", flush=True)
        theirs = run_measured(nn_cmd, env)
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(nn_out / "case.nii.gz")))
        for variant, extra, modes in variants:
            if variant not in args.variants or mode not in modes:
                continue
            extra = [*extra, *args.extra_args.split()] if variant != "before" else []
            ours_out = work / f"ours_{mode}_{variant}"
            if ours_out.exists():
                shutil.rmtree(ours_out)
            main_py = Path(args.before_tree).resolve() / "main.py" if variant == "before" else REPO / "main.py"
            ours_cmd = [sys.executable, str(main_py), "segment", str(ct), "--model", str(model), "--out",
                        str(ours_out), "--device", "cpu", "--mode", mode, "--no-postprocess", "--no-progress",
                        *extra]
            print(f"[{mode}] LiverPlan engine ({variant}) ...", flush=True)
            ours = run_measured(ours_cmd, env)
            rows.append(_row(mode, variant, ours, theirs, ours_out, b))
            rows[-1]["repeat"] = repeat
            print(json.dumps(rows[-1], indent=1), flush=True)

    print("\nmode      variant     rep  ours_s  nnunet_s  speedup  cpu_ratio  ours_MB  nnunet_MB  min_dice  load1")
    for r in rows:
        dvals = [v for v in r["dice"].values() if v is not None]
        print(f"{r['mode']:<9} {r['variant']:<11}{r['repeat']:>4}{r['ours_wall_s']:>8.1f}{r['nnunet_wall_s']:>10.1f}"
              f"{r['speedup']:>9.2f}{r['cpu_time_ratio']:>11.2f}{r['ours_peak_tree_rss_mb']:>9}"
              f"{r['nnunet_peak_tree_rss_mb']:>11}{(min(dvals) if dvals else float('nan')):>10.4f}"
              f"{r['load_average_at_end'][0]:>7.1f}")
    if args.repeat > 1:
        print("\nmedian over repeats (speed-up = median of the per-pair ratios; Dice = the worst run):")
        for key in dict.fromkeys((r["mode"], r["variant"]) for r in rows):
            sel = [r for r in rows if (r["mode"], r["variant"]) == key]
            worst = {k: min((r["dice"][k] for r in sel if r["dice"][k] is not None), default=None)
                     for k in sel[0]["dice"]}
            print(f"{key[0]:<9} {key[1]:<11} speed-up {float(np.median([r['speedup'] for r in sel])):.2f}x  "
                  f"CPU-time ratio {float(np.median([r['cpu_time_ratio'] for r in sel])):.2f}x  "
                  f"ours {float(np.median([r['ours_wall_s'] for r in sel])):.1f} s  "
                  f"nnU-Net {float(np.median([r['nnunet_wall_s'] for r in sel])):.1f} s  worst Dice {worst}")
    (work / "results.json").write_text(json.dumps({"ct": str(ct), "model": str(model), "rows": rows,
                                                   "cpu_count": os.cpu_count()}, indent=2))
    print(f"\nresults: {work / 'results.json'}")
    return 0


VARIANTS = [("default", [], ("fast", "accurate")), ("body-crop", ["--body-crop"], ("fast",)),
            ("whole-ct", ["--no-liver-crop"], ("accurate",)),
            ("bf16", ["--no-liver-crop", "--cpu-bf16"], ("accurate",))]


def cancel_latency(args) -> int:
    """Seconds from CancelToken.cancel() to segment() raising Cancelled, pressing Cancel 0.2 s after each
    stage's first progress report (as the GUI's Cancel button does, from another thread)."""
    from engine.inference import SegmentOptions, segment
    from engine.io import load_case
    from engine.models import find_model
    from engine.progress import CancelToken, Cancelled

    ct = Path(args.ct) if args.ct else REPO.parent / "shared" / "data" / "real" / "3dircadb1.17" / "PATIENT_DICOM.nii.gz"
    case = load_case(ct)
    model = find_model(args.model or "demo")
    segment(case, model, SegmentOptions(device="cpu", mode="fast", postprocess=False))     # warm: model cached, imports done
    rows = []
    for stage in ("preprocess", "predict", "resample"):
        for preprocessing in (("torch", "nnunet") if stage == "preprocess" else ("torch",)):
            token = CancelToken()
            started = threading.Event()
            pressed: dict = {}

            def prog(st, done, total, stage=stage, started=started):
                if st == stage:
                    started.set()

            def press(token=token, started=started, pressed=pressed):
                if started.wait(600):
                    time.sleep(0.2)
                    pressed["t"] = time.perf_counter()
                    token.cancel()

            th = threading.Thread(target=press, daemon=True)
            th.start()
            try:
                segment(case, model, SegmentOptions(device="cpu", mode="fast", preprocessing=preprocessing, postprocess=False), progress=prog, cancel=token)
                latency = None       # the stage ended before the press
            except Cancelled:
                latency = time.perf_counter() - pressed["t"]
            th.join(5)
            rows.append({"stage": stage, "preprocessing": preprocessing,
                         "latency_s": None if latency is None else round(latency, 3)})
            print(json.dumps(rows[-1]), flush=True)
    return 0


def _row(mode, variant, ours, theirs, ours_out, b):
    import SimpleITK as sitk

    from engine.labels import BY_LABEL

    a = sitk.GetArrayFromImage(sitk.ReadImage(str(next(ours_out.glob("*_seg.nii.gz")))))
    if True:
        dice = dice_per_label(a, b)
        row = {"mode": mode, "variant": variant, "ours_wall_s": round(ours["wall_s"], 2), "nnunet_wall_s": round(theirs["wall_s"], 2),
               "speedup": round(theirs["wall_s"] / ours["wall_s"], 2),
               "ours_cpu_s": round(ours["cpu_s"], 1), "nnunet_cpu_s": round(theirs["cpu_s"], 1),
               "cpu_time_ratio": round(theirs["cpu_s"] / max(ours["cpu_s"], 1e-9), 2),
               "ours_peak_tree_rss_mb": round(ours["peak_tree_rss_mb"]),
               "nnunet_peak_tree_rss_mb": round(theirs["peak_tree_rss_mb"]),
               "ours_max_single_rss_mb": round(ours["max_single_rss_mb"]),
               "nnunet_max_single_rss_mb": round(theirs["max_single_rss_mb"]),
               "dice": {BY_LABEL[k].key: (None if np.isnan(v) else round(v, 4)) for k, v in dice.items()},
               "voxels_ours": {BY_LABEL[k].key: int((a == k).sum()) for k in range(1, 6)},
               "voxels_nnunet": {BY_LABEL[k].key: int((b == k).sum()) for k in range(1, 6)},
               "agreement_all_voxels": round(float((a == b).mean()), 6)}
        prov = json.loads(next(ours_out.glob("*_segmentation.json")).read_text())["provenance"]
        row["ours_stage_timings_s"] = prov["timings_s"]
        row["ours_tiles"] = prov["runs"][0].get("tiles")
        row["ours_liver_crop"] = prov["runs"][0].get("liver_crop")
        row["ours_two_stage"] = prov["runs"][0].get("two_stage")
        row["load_average_at_end"] = os.getloadavg()
    return row


if __name__ == "__main__":
    sys.exit(main())
