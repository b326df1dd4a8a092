"""The installers' parts that run without building a bundle: the licence notices, the icon, the Linux
package's desktop entry and maintainer scripts, and the smoke test's screen reading. The frozen bundle
itself is built and checked by ``make installer-test`` (installer/linux/smoke_test.py)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "installer"))
sys.path.insert(0, str(ROOT / "installer" / "linux"))

import notices  # noqa: E402
import smoke_test  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_notices_list_what_was_bundled_with_licences_and_the_qt_lgpl_notice(tmp_path):
    import torch
    pure = [("numpy.core.multiarray", "x", "PYMODULE"), ("PySide6.QtCore", "x", "PYMODULE"), ("main", "x", "PYMODULE")]
    torch_lib = Path(torch.__file__).parent / "lib"
    binaries = [(f"torch/lib/{p.name}", str(p), "BINARY") for p in list(torch_lib.glob("libc10.so"))]
    path = tmp_path / "THIRD-PARTY-NOTICES.txt"
    n = notices.write_notices(path, pure, binaries, [])
    text = path.read_text()
    table = text.split("Qt (LGPL-3.0)")[0]
    rows = [ln.split()[0] for ln in table.splitlines()[5:] if ln.strip()]
    assert n >= 3
    assert {"numpy", "torch", "PySide6_Essentials"} <= set(rows)
    assert "liverplan" not in [r.lower() for r in rows]  # the application is no third party (main.py is its)
    assert "nvidia-cublas" not in table                # no CUDA library was in this bundle's list
    assert "GNU Lesser General Public" in text and "replace with your own build" in text
    assert "BSD" in text                               # numpy's licence text follows the table


def test_build_info_has_version_date_and_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERPLAN_BUILD_DATE", "2026-12-06 20:00 UTC")
    info = notices.write_build_info(tmp_path / "build_info.json", ROOT)
    assert info["version"] == notices.project_version(ROOT) and info["version"].count(".") == 2
    assert info["build_date"] == "2026-12-06 20:00 UTC"
    assert len(info["commit"]) >= 7


def test_icon_is_drawn_and_rendered_at_every_size(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "installer" / "icon" / "make_icon.py"), str(tmp_path)],
                       capture_output=True, text=True, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"},
                       timeout=60)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    img = np.asarray(Image.open(tmp_path / "liverplan_256.png").convert("RGBA"))
    assert img.shape == (256, 256, 4)
    assert img[0, 0, 3] == 0 and img[128, 128, 3] == 255       # transparent corner, opaque centre
    red = (img[..., 0] > 130) & (img[..., 1] < 110) & (img[..., 2] < 110)
    assert red.mean() > 0.15                                    # the liver
    assert (tmp_path / "liverplan.ico").stat().st_size > 1000
    assert (tmp_path / "liverplan.svg").read_text().startswith("<?xml")


def test_desktop_entry_opens_the_issue_formats_and_dicom_folders():
    entry = (ROOT / "installer" / "linux" / "liverplan.desktop").read_text()
    mime = (ROOT / "installer" / "linux" / "liverplan-mime.xml").read_text()
    for glob in ("*.nii", "*.nii.gz", "*.nrrd", "*.seg.nrrd"):
        assert f'pattern="{glob}"' in mime
    types = next(ln for ln in entry.splitlines() if ln.startswith("MimeType=")).split("=", 1)[1].split(";")
    assert "inode/directory" in types and "application/x-liverplan-seg-nrrd" in types
    assert "Exec=/opt/liverplan/liverplan %f" in entry
    if shutil.which("desktop-file-validate"):
        r = subprocess.run(["desktop-file-validate", str(ROOT / "installer" / "linux" / "liverplan.desktop")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def _preinst(tmp_path, need_kb: int) -> Path:
    text = (ROOT / "installer" / "linux" / "preinst").read_text().replace("@INSTALLED_KB@", str(need_kb))
    p = tmp_path / "preinst"
    p.write_text(text)
    p.chmod(0o755)
    return p


def test_preinst_refuses_too_little_disk_space_and_says_so(tmp_path):
    r = subprocess.run(["sh", str(_preinst(tmp_path, 10 ** 12)), "install"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "LiverPlan needs" in r.stderr and "Nothing was installed" in r.stderr
    ok = subprocess.run(["sh", str(_preinst(tmp_path, 1)), "install"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_maintainer_and_build_scripts_are_valid_shell():
    for name in ("preinst", "postinst", "postrm", "liverplan-wrapper.sh", "add-to-menu.sh"):
        r = subprocess.run(["sh", "-n", str(ROOT / "installer" / "linux" / name)], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"
    for name in ("installer/linux/build_linux.sh", "installer/macos/build_macos.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / name)], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"


def test_postrm_keeps_user_data(tmp_path):
    text = (ROOT / "installer" / "linux" / "postrm").read_text()
    commands = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("rm ")]
    assert commands == ["rm -rf /opt/liverplan"]


def _xwd(rgb: np.ndarray) -> bytes:
    """An XWD frame buffer as Xvfb -fbdir writes it (32 bits per pixel, LSB first, BGRX)."""
    h, w = rgb.shape[:2]
    name = b"Xvfb main window\x00"
    header_size = 100 + len(name)
    fields = [header_size, 7, 2, 24, w, h, 0, 0, 32, 0, 32, 32, w * 4, 4, 0xFF0000, 0xFF00, 0xFF, 8, 256, 0, w, h,
              0, 0, 0]
    px = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    return struct.pack(">25I", *fields) + name + px.astype("<u4").tobytes()


def test_screen_reader_finds_a_rendered_3d_pane_and_not_a_black_one(tmp_path):
    rng = np.random.default_rng(0)
    win = np.full((800, 1200, 3), 60, np.uint8)                      # the window's grey frame
    grid = win[32:768, :840]
    gh, gw = grid.shape[:2]
    for qy, qx in ((0, 0), (0, 1), (1, 0)):                            # three CT slice views: grey texture
        q = grid[qy * gh // 2:(qy + 1) * gh // 2, qx * gw // 2:(qx + 1) * gw // 2]
        q[:] = rng.integers(60, 200, size=q.shape[:2])[..., None]
    pane = grid[gh // 2:, gw // 2:]
    pane[:] = 0                                                        # the 3D pane's black background
    screen = np.zeros((1000, 1600, 3), np.uint8)
    screen[:800, :1200] = win
    (tmp_path / "blank").write_bytes(_xwd(screen))
    back = smoke_test.read_xwd(tmp_path / "blank")
    assert np.array_equal(back, screen)
    assert not smoke_test.rendered_3d_pane(back)[0]
    pane[60:300, 80:300] = (180, 70, 60)                               # a shaded liver surface
    pane[120:200, 150:260] = (60, 110, 220)                            # a vessel in front of it
    screen[:800, :1200] = win
    (tmp_path / "rendered").write_bytes(_xwd(screen))
    ok, detail = smoke_test.rendered_3d_pane(smoke_test.read_xwd(tmp_path / "rendered"))
    assert ok, detail
    assert "quadrant 1,1" in detail


def test_ci_workflow_builds_all_three_and_self_tests_each():
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "installers.yml").read_text())
    assert set(wf["jobs"]) == {"linux", "windows", "macos"}
    for name, job in wf["jobs"].items():
        text = yaml.safe_dump(job["steps"])
        # linux: the smoke test runs --self-test; windows/macos: the build script and an explicit step
        assert "installer-test" in text if name == "linux" else "--self-test" in text, name
    iss = (ROOT / "installer" / "windows" / "liverplan.iss").read_text()
    assert "DiskSpanning=yes" in iss and "[UninstallDelete]" in iss and "OpenWithProgids" in iss
