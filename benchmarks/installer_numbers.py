"""Numbers for the installers' note (README "Installing LiverPlan" developer details). Not a test.

    python benchmarks/installer_numbers.py [--dist dist] [--build] [--skip-gui]

--build      time ``make installer`` first (build time); otherwise the installers already in --dist are used
Reports: each installer's size (compressed), the bundle's size on disk and what takes the space (top 10),
the smoke test's time (from dist/installer-smoke.json, written by ``make installer-test``), the frozen app's
start (``--version`` and the desktop window on the demo case under Xvfb, cold = first start after the
bundle was unpacked and the page cache dropped where allowed, warm = the next start), and ``segment`` of a
phantom frozen vs from source. Writes the numbers to DIST/installer-numbers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "installer" / "linux"))


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _top10(bundle: Path) -> list[tuple[str, int]]:
    """Largest parts of the bundle: each package folder in _internal (nvidia/<lib> one level deeper)."""
    internal = bundle / "_internal"
    parts: dict[str, int] = {}
    for p in internal.iterdir():
        if p.is_symlink():          # PyInstaller links libraries into _internal/: counted where they lie
            continue
        if p.is_dir() and p.name == "nvidia":
            for q in p.iterdir():
                parts[f"nvidia/{q.name}"] = _du(q)
        elif p.is_dir():
            parts[p.name] = _du(p)
        elif p.is_file():
            parts[p.name] = p.stat().st_size
    return sorted(parts.items(), key=lambda kv: -kv[1])[:10]


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _time(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - t0, r


def _gui_start(exe: Path, work: Path) -> tuple[float | None, float | None]:
    """Seconds until the window shows the demo case's CT, and until its 3D pane is rendered (Xvfb)."""
    import numpy as np
    from smoke_test import SCREEN, read_xwd, rendered_3d_pane

    fb = work / "fb"
    fb.mkdir(exist_ok=True)
    disp = ":%d" % (190 + os.getpid() % 50)
    xvfb = subprocess.Popen(["Xvfb", disp, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-fbdir", str(fb),
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (fb / "Xvfb_screen0").exists():
            time.sleep(0.1)
        env = {"HOME": str(work / "home"), "PATH": "/usr/bin:/bin", "DISPLAY": disp, "LANG": "C.UTF-8"}
        t0 = time.perf_counter()
        app = subprocess.Popen([str(exe)], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shown = rendered = None
        while time.perf_counter() - t0 < 180 and app.poll() is None:
            rgb = read_xwd(fb / "Xvfb_screen0")
            grey = np.mean((rgb.max(axis=2) - rgb.min(axis=2) < 12) & (rgb.max(axis=2) > 50))
            if shown is None and grey > 0.02:
                shown = time.perf_counter() - t0
            if rendered_3d_pane(rgb)[0]:
                rendered = time.perf_counter() - t0
                break
            time.sleep(0.2)
        app.terminate()
        app.wait(timeout=30)
        return shown, rendered
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", default=str(ROOT / "dist"))
    ap.add_argument("--build", action="store_true", help="time `make installer` first")
    ap.add_argument("--skip-gui", action="store_true", help="no desktop-window start times (no Xvfb)")
    args = ap.parse_args()
    dist = Path(args.dist).resolve()
    out: dict = {}
    if args.build:
        t, r = _time(["make", "-o", ".venv/.liverplan-installed", "installer"], ROOT)
        out["build_s"] = round(t, 1)
        if r.returncode:
            print(r.stdout[-2000:], r.stderr[-2000:])
            return 1
    debs = sorted(dist.glob("liverplan_*_amd64.deb"))
    tars = sorted(dist.glob("liverplan-*-linux-x86_64.tar.zst"))
    if not debs or not tars:
        print(f"no installers in {dist}: run `make installer` (or pass --build)", file=sys.stderr)
        return 2
    out["deb_bytes"] = debs[-1].stat().st_size
    out["tar_zst_bytes"] = tars[-1].stat().st_size
    smoke = dist / "installer-smoke.json"
    if smoke.is_file():
        out["smoke"] = json.loads(smoke.read_text())["timings"]
    work = Path(tempfile.mkdtemp(prefix="liverplan-numbers-"))
    try:
        (work / "home").mkdir()
        t, r = _time(["tar", "-I", "zstd", "-xf", str(tars[-1]), "-C", str(work)], work)
        out["unpack_s"] = round(t, 1)
        bundle = next(p for p in work.iterdir() if p.is_dir() and (p / "liverplan").exists())
        exe = bundle / "liverplan"
        out["bundle_bytes"] = _du(bundle)
        out["top10"] = [[name, size] for name, size in _top10(bundle)]
        env = {"HOME": str(work / "home"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        out["cold_is_after_drop_caches"] = _drop_caches()
        out["version_cold_s"] = round(_time([str(exe), "--version"], work, env)[0], 2)
        out["version_warm_s"] = round(_time([str(exe), "--version"], work, env)[0], 2)
        if not args.skip_gui and shutil.which("Xvfb"):
            _drop_caches()
            shown, rendered = _gui_start(exe, work)
            out["gui_cold_window_s"], out["gui_cold_3d_s"] = shown, rendered
            shown, rendered = _gui_start(exe, work)
            out["gui_warm_window_s"], out["gui_warm_3d_s"] = shown, rendered
        # segment: the demo case's size (160 x 256 x 256, 2 x 1.25 x 1.25 mm), frozen vs source, CPU, fast
        src_env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVERPLAN_DATA_DIR": str(work / "src-data")}
        subprocess.run([sys.executable, str(ROOT / "main.py"), "phantom", "--out", str(work / "ph"), "--seed", "23",
                        "--shape", "160", "256", "256", "--spacing", "2", "1.25", "1.25"], env=src_env, check=True,
                       capture_output=True)
        ct = next((work / "ph").glob("*_ct.nii.gz"))
        seg = ["segment", str(ct), "--model", "demo", "--device", "cpu", "--no-progress"]
        out["segment_frozen_s"] = round(_time([str(exe), *seg, "--out", str(work / "f")], work, env)[0], 1)
        out["segment_source_s"] = round(_time([sys.executable, str(ROOT / "main.py"), *seg, "--out",
                                               str(work / "s")], work, src_env)[0], 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (dist / "installer-numbers.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"deb                 {_mb(out['deb_bytes'])}")
    print(f"portable tar.zst    {_mb(out['tar_zst_bytes'])}")
    print(f"bundle on disk      {_mb(out['bundle_bytes'])}")
    for name, size in out["top10"]:
        print(f"  {name:34s} {_mb(size)}")
    for k, v in out.items():
        if k.endswith("_s") or k == "smoke" or k == "cold_is_after_drop_caches":
            print(f"{k:20s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
