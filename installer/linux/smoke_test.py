"""The Linux installers' smoke test (``make installer-test``; run by .ci/run after ``make test``).

Installs the built package as a clinician's machine would and checks it with the source tree out of
reach: every frozen command runs in another working directory, with a clean environment (no PYTHONPATH,
no virtual environment on the PATH, a fresh HOME), without network (``unshare -n``):

- the .deb installs with ``dpkg -i`` (command on the PATH, desktop entry, icon, file types);
- ``liverplan --version`` and ``--self-test`` pass, also as a user who cannot write the install folder;
- ``liverplan segment`` of a phantom gives labels identical to the source tree's output (same model/mode);
- ``liverplan info`` reads the real DICOM series in ../shared/data/real (skipped, with a message, where absent);
- an unreadable file gets the same message (and exit status) as from source;
- the desktop app opens the demo case under Xvfb and the screen shows a non-blank 3D pane;
- a second install while LiverPlan runs is refused with a clear message and leaves the installed copy intact;
- the portable archive unpacked into a fresh folder passes the self-test, also after the folder is moved;
- ``dpkg -r`` removes it cleanly (nothing under /opt/liverplan; the user's data folder stays).

Run as root (dpkg) with the source tree's interpreter:  python installer/linux/smoke_test.py DIST_DIR
It writes DIST_DIR/installer-smoke.json (timings) and DIST_DIR/installer-smoke-screen.png, and removes
everything else it created, the package included, also when a check fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REAL_DICOM = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator" / "example_ct_dicom"
INSTALL_DIR = Path("/opt/liverplan")
SCREEN = (1600, 1000)
GUI_TIMEOUT_S = 180

results: list[tuple[str, bool, str]] = []
timings: dict[str, float] = {}


def check(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, bool(ok), detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return bool(ok)


def sh(cmd: list[str], timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class Clean:
    """Runs a command the way a clinician's session would: fresh HOME, minimal PATH, no PYTHONPATH or
    virtual environment, another working directory, and (unshare -n) no network."""

    def __init__(self, home: Path, cwd: Path, user: str | None = None, display: str | None = None):
        self.home, self.cwd, self.user, self.display = home, cwd, user, display

    def argv(self, cmd: list[str]) -> list[str]:
        env = [f"HOME={self.home}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"]
        if self.display:
            env.append(f"DISPLAY={self.display}")
        inner = ["env", "-i", *env, *cmd]
        if self.user:
            inner = ["setpriv", f"--reuid={self.user}", "--regid=nogroup", "--clear-groups", *inner]
        return ["unshare", "-n", *inner]

    def run(self, cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
        return sh(self.argv(cmd), timeout=timeout, cwd=self.cwd)

    def popen(self, cmd: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen(self.argv(cmd), cwd=self.cwd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def timed(name: str, fn):
    t0 = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t0, 2)
    return out


# ------------------------------------------------------------------------------------------------ screen
def read_xwd(path: Path) -> np.ndarray:
    """The Xvfb frame buffer (-fbdir writes it as an XWD file): an (H, W, 3) uint8 RGB array."""
    data = path.read_bytes()
    fmt = ">25I" if struct.unpack(">I", data[:4])[0] < 4096 else "<25I"
    h = struct.unpack(fmt, data[:100])
    header_size, width, height, bpp, bpl, ncolors = h[0], h[4], h[5], h[11], h[12], h[19]
    red_mask, green_mask, blue_mask = h[14], h[15], h[16]
    if bpp != 32:
        raise RuntimeError(f"unexpected frame buffer depth {bpp} bits per pixel")
    off = header_size + 12 * ncolors
    order = "<" if h[7] == 0 else ">"   # byte_order: 0 = LSBFirst
    px = np.frombuffer(data, dtype=order + "u4", count=height * bpl // 4, offset=off).reshape(height, bpl // 4)
    px = px[:, :width]

    def chan(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((px & mask) >> shift).astype(np.uint8)

    return np.dstack([chan(red_mask), chan(green_mask), chan(blue_mask)])


def rendered_3d_pane(rgb: np.ndarray) -> tuple[bool, str]:
    """Whether one quadrant of the window's 2 x 2 view grid looks like a rendered 3D scene: coloured,
    shaded surfaces on the pane's black background, and hardly any of the CT's grey (the three slice
    views are mostly grey CT with coloured outlines). The window sits at the screen's top left."""
    on = np.argwhere(rgb.max(axis=2) > 0)
    if len(on) == 0:
        return False, "the screen is black"
    y1, x1 = on.max(axis=0)
    win = rgb[: y1 + 1, : x1 + 1].astype(int)
    # the view grid fills the window left of the control dock: look for the quadrant in the left 70 %
    h, w = win.shape[:2]
    grid = win[int(0.04 * h): int(0.96 * h), : int(0.70 * w)]
    gh, gw = grid.shape[:2]
    best = (0.0, "")
    for qy in (0, 1):
        for qx in (0, 1):
            q = grid[qy * gh // 2: (qy + 1) * gh // 2, qx * gw // 2: (qx + 1) * gw // 2]
            spread = q.max(axis=2) - q.min(axis=2)
            bright = q.max(axis=2)
            coloured = float(np.mean((spread > 40) & (bright > 60)))
            grey = float(np.mean((spread < 12) & (bright > 50)))
            score = coloured if grey < 0.08 else 0.0
            desc = f"quadrant {qy},{qx}: {coloured:.1%} coloured, {grey:.1%} grey"
            if score > best[0]:
                best = (score, desc)
    return best[0] > 0.02, best[1] or "no quadrant with a coloured 3D scene"


def gui_check(clean: Clean, deb: Path, out_dir: Path, work: Path) -> None:
    fbdir = work / "fb"
    fbdir.mkdir()
    disp = ":%d" % (90 + os.getpid() % 100)
    xvfb = subprocess.Popen(["Xvfb", disp, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-fbdir", str(fbdir),
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    app = None
    try:
        for _ in range(50):
            if (fbdir / "Xvfb_screen0").exists():
                break
            time.sleep(0.1)
        os.chmod(f"/tmp/.X11-unix/X{disp[1:]}", 0o777) if Path(f"/tmp/.X11-unix/X{disp[1:]}").exists() else None
        gui = Clean(clean.home, clean.cwd, display=disp)
        for attempt in ("cold", "warm"):
            t0 = time.perf_counter()
            app = gui.popen(["liverplan"], work / f"gui_{attempt}.log")
            shown = ok = None
            detail = ""
            while time.perf_counter() - t0 < GUI_TIMEOUT_S and app.poll() is None:
                rgb = read_xwd(fbdir / "Xvfb_screen0")
                grey = np.mean((rgb.max(axis=2) - rgb.min(axis=2) < 12) & (rgb.max(axis=2) > 50))
                if shown is None and grey > 0.02:   # the window with the demo case's CT slices is up
                    shown = time.perf_counter() - t0
                ok, detail = rendered_3d_pane(rgb)
                if ok:
                    break
                time.sleep(0.5)
            timings[f"gui_{attempt}_window_s"] = round(shown, 2) if shown else None
            timings[f"gui_{attempt}_3d_s"] = round(time.perf_counter() - t0, 2) if ok else None
            if attempt == "cold":
                time.sleep(1.0)   # let the last frame settle before the screenshot
                rgb = read_xwd(fbdir / "Xvfb_screen0")
                ok, detail = rendered_3d_pane(rgb)
                _save_png(rgb, out_dir / "installer-smoke-screen.png")
                check("desktop app shows the demo case with a non-blank 3D pane", ok,
                      f"{detail}; window with the case after {shown or float('nan'):.1f} s; screenshot "
                      f"{out_dir / 'installer-smoke-screen.png'}")
                # a second install while LiverPlan runs: refused, the installed copy untouched
                again = sh(["dpkg", "-i", str(deb)])
                installed = sh(["dpkg-query", "-W", "-f=${Status}", "liverplan"]).stdout
                check("a second install over a running copy is refused and changes nothing",
                      again.returncode != 0 and "LiverPlan is running" in again.stderr
                      and installed == "install ok installed" and (INSTALL_DIR / "liverplan").exists(),
                      (again.stderr.strip().splitlines() or ["(no message)"])[0])
            _stop(app)
            app = None
    finally:
        if app is not None:
            _stop(app)
        _stop(xvfb)


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


# ------------------------------------------------------------------------------------------------ main
def read_labels(path: Path) -> tuple[np.ndarray, tuple]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), (img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def source(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVERPLAN_DATA_DIR": str(cwd / "source-data")}
    return sh([sys.executable, str(ROOT / "main.py"), *cmd], timeout=timeout, cwd=cwd, env=env)


def main(dist: Path) -> int:
    t_start = time.perf_counter()
    if os.geteuid() != 0:
        print("installer-test: run as root (it installs and removes the .deb with dpkg)", file=sys.stderr)
        return 2
    debs = sorted(dist.glob("liverplan_*_amd64.deb"))
    tars = sorted(dist.glob("liverplan-*-linux-x86_64.tar.zst"))
    if not debs or not tars:
        print(f"installer-test: no .deb or .tar.zst in {dist}: run `make installer` first", file=sys.stderr)
        return 2
    deb, tar = debs[-1], tars[-1]
    if sh(["unshare", "-n", "true"]).returncode != 0:
        print("installer-test: `unshare -n` does not work here; the test needs it to run without network",
              file=sys.stderr)
        return 2
    if sh(["dpkg-query", "-W", "liverplan"]).returncode == 0:
        print("installer-test: a liverplan package is installed already; removing it first", flush=True)
        sh(["dpkg", "--purge", "liverplan"])
    work = Path(tempfile.mkdtemp(prefix="liverplan-smoke-"))
    os.chmod(work, 0o755)
    home, cwd, nobody_home = work / "home", work / "elsewhere", work / "nobody"
    for d in (home, cwd, nobody_home):
        d.mkdir()
    shutil.chown(nobody_home, "nobody", "nogroup")
    clean = Clean(home, cwd)
    try:
        # ---- reference outputs from the source tree
        src = work / "src"
        src.mkdir()
        r = source(["phantom", "--out", str(src), "--seed", "5", "--shape", "64", "96", "96", "--spacing",
                    "2.5", "2.5", "2.5", "--lesions", "2"], src)
        phantom = next(iter(sorted(src.glob("*_ct.nii.gz")) or sorted(src.glob("*.nii.gz"))), None)
        if r.returncode or phantom is None:
            check("source tree writes the test phantom", False, r.stderr[-500:])
            return 1
        shutil.copy(phantom, cwd / "phantom_ct.nii.gz")
        seg_args = ["segment", "phantom_ct.nii.gz", "--model", "demo", "--device", "cpu", "--mode", "fast",
                    "--no-progress"]
        shutil.copy(phantom, src / "phantom_ct.nii.gz")
        r = timed("segment_source_s", lambda: source([*seg_args, "--out", str(src / "seg")], src))
        check("source tree segments the phantom", r.returncode == 0, r.stderr.strip()[-300:])
        bad = cwd / "damaged_ct.nii.gz"
        bad.write_bytes(b"\x1f\x8b" + os.urandom(4000))
        src_bad = source(["info", str(bad)], src)

        # ---- the .deb: first onto a full disk (a 64 MB /opt in a private mount namespace): refused, nothing left
        full = sh(["unshare", "-m", "--propagation", "private", "sh", "-c",
                   f"mount -t tmpfs -o size=64m tmpfs /opt && dpkg -i '{deb}'"])
        status = sh(["dpkg-query", "-W", "-f=${Status}", "liverplan"]).stdout
        check("an install without enough disk space is refused and leaves nothing half-installed",
              full.returncode != 0 and "needs" in full.stderr and "free disk space" in full.stderr
              and status in ("", "unknown ok not-installed", "purge ok not-installed", "install ok not-installed"),
              " ".join(ln for ln in full.stderr.splitlines() if "LiverPlan" in ln)[:200] + f" (dpkg status: "
              f"'{status or 'absent'}')")
        sh(["dpkg", "--purge", "liverplan"])
        r = timed("dpkg_install_s", lambda: sh(["dpkg", "-i", str(deb)]))
        check("dpkg -i installs the package", r.returncode == 0,
              ((r.stderr if r.returncode else r.stdout).strip().splitlines() or [""])[-1][-300:])
        check("installed: /usr/bin/liverplan, /opt/liverplan, desktop entry, icon, file types",
              all(Path(p).exists() for p in ("/usr/bin/liverplan", "/opt/liverplan/liverplan",
                                             "/usr/share/applications/liverplan.desktop",
                                             "/usr/share/icons/hicolor/256x256/apps/liverplan.png",
                                             "/usr/share/mime/packages/liverplan.xml")))
        r = timed("version_cold_s", lambda: clean.run(["liverplan", "--version"]))
        check("liverplan --version", r.returncode == 0 and "LiverPlan" in r.stdout and "PyTorch" in r.stdout,
              " | ".join(ln for ln in r.stdout.splitlines() if ln.startswith(("LiverPlan", "Build", "Compute")))
              or r.stderr[-300:])
        timed("version_warm_s", lambda: clean.run(["liverplan", "--version"]))
        r = timed("selftest_s", lambda: clean.run(["liverplan", "--self-test"]))
        check("liverplan --self-test", r.returncode == 0, (r.stdout.strip().splitlines() or [r.stderr[-300:]])[-1])
        if r.returncode:
            print(r.stdout, r.stderr[-3000:])
        marker = work / "marker"
        marker.touch()
        r = Clean(nobody_home, cwd, user="nobody").run(["liverplan", "--self-test"])
        written = sh(["find", str(INSTALL_DIR), "-newer", str(marker)]).stdout.split()
        check("--self-test as a user without write access to /opt/liverplan", r.returncode == 0 and not written,
              (r.stdout.strip().splitlines() or [r.stderr[-300:]])[-1] + (f"; wrote {written[:3]}" if written else ""))

        r = timed("segment_frozen_s", lambda: clean.run(["liverplan", *seg_args, "--out", str(cwd / "seg")]))
        ok = r.returncode == 0
        if ok:
            a, ga = read_labels(next((src / "seg").glob("*_seg.nii.gz")))
            b, gb = read_labels(next((cwd / "seg").glob("*_seg.nii.gz")))
            same = a.shape == b.shape and np.array_equal(a, b) and ga == gb
            check("frozen segment == source segment (same model, mode fast)", same,
                  f"{int((a > 0).sum())} labelled voxels, values {sorted(np.unique(a).tolist())}"
                  if same else f"{int((a != b).sum()) if a.shape == b.shape else 'shape'} voxels differ")
        else:
            check("frozen segment == source segment (same model, mode fast)", False, r.stderr[-500:])

        # the other subcommands on that result: measure, export (label map + STL surfaces), evaluate
        ref = cwd / "ref"
        ref.mkdir()
        shutil.copy(next(src.glob("*_labels.nii.gz")), ref / "phantom_labels.nii.gz")
        seg_file = next((cwd / "seg").glob("*_seg.nii.gz"), None)
        if seg_file is not None:
            m = clean.run(["liverplan", "measure", "phantom_ct.nii.gz", str(seg_file)])
            e = clean.run(["liverplan", "export", "phantom_ct.nii.gz", str(seg_file), "--out", "export", "--mask",
                           "seg.nrrd", "--mesh", "stl"])
            v = clean.run(["liverplan", "evaluate", "--pred", "seg", "--ref", "ref", "--out", "eval"])
            stls = sorted(p.name for p in (cwd / "export").glob("*.stl"))
            check("liverplan measure, export and evaluate on the frozen result",
                  m.returncode == 0 and "Total liver volume" in m.stdout and e.returncode == 0 and len(stls) >= 1
                  and any((cwd / "export").glob("*.seg.nrrd")) and v.returncode == 0,
                  f"{len(stls)} STL surfaces; " + " | ".join(x.stderr.strip()[-200:] for x in (m, e, v) if x.returncode))
        if REAL_DICOM.is_dir():
            fr = clean.run(["liverplan", "info", str(REAL_DICOM)])
            sr = source(["info", str(REAL_DICOM)], src)
            check("liverplan info reads the real DICOM series (same text as from source)",
                  fr.returncode == 0 and fr.stdout == sr.stdout and "1 series" in fr.stdout,
                  (fr.stdout.splitlines() or [fr.stderr[-300:]])[0])
        else:
            print(f"skip liverplan info on real DICOM: {REAL_DICOM} is absent (no ../shared here)", flush=True)

        fb = clean.run(["liverplan", "info", str(bad)])
        check("an unreadable file gets the same clear message as from source",
              fb.returncode == src_bad.returncode != 0 and fb.stderr == src_bad.stderr and fb.stderr.strip(),
              fb.stderr.strip()[:200])

        gui_check(clean, deb, dist, work)

        # ---- an upgrade (here: the same package again, which dpkg runs as an upgrade) keeps the user's models
        data_dir = home / ".local" / "share" / "LiverPlan"
        kept = data_dir / "models" / "my_model" / "dataset.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("{}")
        r = timed("dpkg_upgrade_s", lambda: sh(["dpkg", "-i", str(deb)]))
        v = clean.run(["liverplan", "--version"])
        check("an upgrade over the installed package works and keeps the user's models", r.returncode == 0
              and "preinst" not in r.stderr and kept.is_file() and v.returncode == 0,
              ((r.stderr if r.returncode else r.stdout).strip().splitlines() or [""])[-1][-200:])

        # ---- the portable archive, unpacked into a fresh folder, then moved
        port = work / "portable"
        port.mkdir()
        r = timed("portable_unpack_s", lambda: sh(["tar", "-I", "zstd", "-xf", str(tar), "-C", str(port)]))
        exe = next(port.glob("*/liverplan"), None)
        check("portable archive unpacks", r.returncode == 0 and exe is not None, r.stderr[-300:])
        if exe is not None:
            r = clean.run([str(exe), "--self-test"])
            check("portable --self-test", r.returncode == 0, (r.stdout.strip().splitlines() or [r.stderr[-300:]])[-1])
            moved = work / "moved" / "somewhere else"
            moved.mkdir(parents=True)
            new_dir = moved / exe.parent.name
            exe.parent.rename(new_dir)
            r = clean.run([str(new_dir / "liverplan"), "--self-test"])
            check("portable --self-test after moving the folder", r.returncode == 0 and str(new_dir) in r.stdout,
                  (r.stdout.strip().splitlines() or [r.stderr[-300:]])[-1])

        # ---- removal
        r = sh(["dpkg", "-r", "liverplan"])
        left = [p for p in ("/opt/liverplan", "/usr/bin/liverplan", "/usr/share/applications/liverplan.desktop")
                if Path(p).exists()]
        check("dpkg -r removes the application (nothing under /opt/liverplan)", r.returncode == 0 and not left,
              f"left: {left}" if left else "")
        check("removing keeps the user's data folder", data_dir.is_dir(), str(data_dir))
    finally:
        sh(["dpkg", "--purge", "liverplan"])
        shutil.rmtree(work, ignore_errors=True)
    timings["smoke_test_total_s"] = round(time.perf_counter() - t_start, 1)
    failed = [n for n, ok, _ in results if not ok]
    (dist / "installer-smoke.json").write_text(json.dumps({"timings": timings, "checks": [
        {"name": n, "ok": ok, "detail": d} for n, ok, d in results]}, indent=2) + "\n")
    print(json.dumps(timings, indent=1))
    if failed:
        print(f"installer-test FAILED: {len(failed)} of {len(results)} checks: {'; '.join(failed)}", flush=True)
        return 1
    print(f"installer-test passed: {len(results)} checks in {timings['smoke_test_total_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "dist").resolve()))
