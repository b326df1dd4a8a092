"""Draw LiverPlan's icon: ``liverplan.svg`` (the drawing) and, rendered from it, PNGs, ``.ico`` and ``.icns``.

    python installer/icon/make_icon.py [OUT_DIR]     (default: installer/icon/build)

The SVG is committed (the drawing, a few kB); the raster files are generated at build time by
``make installer`` and the CI workflow. Rendering uses Qt's own SVG renderer and image writers (the
application's libraries): no other tool is needed on any of the three systems.

The drawing: a liver silhouette (right lobe large, left lobe tapering) in liver red-brown on a dark teal
rounded square, the portal vein (blue) and hepatic veins (violet) branching inside, one yellow lesion.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <title>LiverPlan</title>
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#1f5f6b"/><stop offset="1" stop-color="#123a44"/>
    </linearGradient>
    <linearGradient id="liver" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="#c2564a"/><stop offset="1" stop-color="#8e2f2a"/>
    </linearGradient>
  </defs>
  <rect x="8" y="8" width="240" height="240" rx="44" fill="url(#bg)"/>
  <!-- liver: dome-shaped right lobe (image left), tapering left lobe, notch at the gallbladder fossa -->
  <path d="M 34 118 C 30 78 66 56 112 58 C 150 60 186 62 212 74 C 230 82 228 98 210 106
           C 186 118 160 126 140 140 C 122 154 112 182 86 192 C 58 202 38 168 34 118 Z"
        fill="url(#liver)" stroke="#f0c8b8" stroke-width="5" stroke-linejoin="round"/>
  <!-- hepatic veins: three branches converging towards the IVC at the top -->
  <g fill="none" stroke="#7b5cc4" stroke-width="7" stroke-linecap="round">
    <path d="M 122 66 C 104 86 86 100 62 108"/>
    <path d="M 122 66 C 118 92 112 110 104 128"/>
    <path d="M 122 66 C 146 80 168 86 192 86"/>
  </g>
  <!-- portal vein: trunk entering at the hilum, dividing left and right -->
  <g fill="none" stroke="#3f8fe0" stroke-width="9" stroke-linecap="round">
    <path d="M 128 168 C 124 150 118 140 108 136"/>
    <path d="M 108 136 C 90 136 72 144 56 150"/>
    <path d="M 108 136 C 128 122 150 112 176 104"/>
  </g>
  <!-- one metastasis -->
  <circle cx="76" cy="170" r="13" fill="#f2c94c" stroke="#fff3c4" stroke-width="3"/>
</svg>
"""

PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(out_dir: Path) -> list[Path]:
    """Write liverplan.svg, liverplan_<N>.png, liverplan.png (256), liverplan.ico and liverplan.icns."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QImageWriter, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - Qt needs one
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path = out_dir / "liverplan.svg"
    svg_path.write_text(SVG, encoding="utf-8")
    renderer = QSvgRenderer(str(svg_path))
    if not renderer.isValid():
        raise SystemExit(f"the SVG drawing {svg_path} is invalid")
    written = [svg_path]
    images = {}
    for n in PNG_SIZES:
        img = QImage(n, n, QImage.Format.Format_ARGB32)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(p)
        p.end()
        images[n] = img
        path = out_dir / f"liverplan_{n}.png"
        if not img.save(str(path)):
            raise SystemExit(f"cannot write {path}")
        written.append(path)
    images[256].save(str(out_dir / "liverplan.png"))
    written.append(out_dir / "liverplan.png")
    for fmt, size in (("ico", 256), ("icns", 512)):
        path = out_dir / f"liverplan.{fmt}"
        writer = QImageWriter(str(path), fmt.encode())
        if writer.write(images[size]):
            written.append(path)
        else:  # the format plugin is missing: the installers then go without that icon, and say so
            print(f"make_icon: no {fmt} writer here ({writer.errorString()}); {path.name} not written", file=sys.stderr)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "build"
    for f in render(out):
        print(f"{f} {f.stat().st_size} bytes")
