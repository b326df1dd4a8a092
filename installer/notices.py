"""Build-time helpers for the frozen bundle: ``build_info.json`` and ``THIRD-PARTY-NOTICES.txt``.

Run by ``installer/liverplan.spec`` inside PyInstaller (not imported by the application). The notices are
generated from the metadata of the distributions whose modules or libraries actually went into the bundle,
so the file lists what a clinician received, not what the build machine happened to have installed.
"""
from __future__ import annotations

import datetime
import importlib.metadata as md
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterable

QT_LGPL_NOTICE = """\
Qt for Python (PySide6, shiboken6) and the Qt libraries are used under the GNU Lesser General Public
License version 3 (LGPL-3.0). LiverPlan links to them dynamically: the Qt libraries are separate files in
this folder (PySide6/ and its Qt/lib sub-folder), which you may replace with your own build of the same
version. The LGPL-3.0 text: https://www.gnu.org/licenses/lgpl-3.0.html; the Qt source code:
https://download.qt.io/official_releases/qt/ and https://code.qt.io/. The LiverPlan project will give you
the corresponding source of these libraries on request.
"""


def project_version(root: Path) -> str:
    """The ``version = "..."`` of the project's pyproject.toml."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "0.0.0"


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_build_info(path: Path, root: Path) -> dict:
    """Write the version, build date (UTC, ISO) and commit the About box and ``--version`` show."""
    date = os.environ.get("LIVERPLAN_BUILD_DATE") or datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    info = {"version": project_version(root), "build_date": date, "commit": _git_commit(root),
            "frozen_with": "PyInstaller " + md.version("pyinstaller")}
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _top_level(dest: str) -> str:
    """'torch/lib/libc10.so' -> 'torch'; 'numpy.core.multiarray' -> 'numpy'; 'nvidia/cublas/...' -> 'nvidia'."""
    dest = dest.replace("\\", "/")
    head = dest.split("/", 1)[0]
    return head.split(".", 1)[0]


def bundled_distributions(pure: Iterable, binaries: Iterable, datas: Iterable) -> dict[str, md.Distribution]:
    """The installed distributions that provided something bundled (module, library or data file)."""
    tops = {_top_level(e[0]) for e in pure}
    tops |= {_top_level(e[0]) for e in binaries}
    tops |= {_top_level(e[0]) for e in datas}
    # libraries a wheel vendors in '<name>.libs/' (auditwheel) belong to <name>
    tops |= {t[:-5] for t in tops if t.endswith(".libs")}
    pkg_to_dists = md.packages_distributions()
    found: dict[str, md.Distribution] = {}
    for top in sorted(tops):
        for dist_name in pkg_to_dists.get(top, []):
            try:
                dist = md.distribution(dist_name)
            except md.PackageNotFoundError:
                continue
            if dist.metadata["Name"].lower() != "liverplan":   # the application itself is no third party
                found.setdefault(dist.metadata["Name"], dist)
    # the nvidia-* CUDA wheels share the 'nvidia' namespace: keep only those whose files were bundled
    bundled_files = {e[0].replace("\\", "/") for e in binaries}
    for name in [n for n in found if n.lower().startswith("nvidia")]:
        files = found[name].files or []
        if not any(str(f).replace("\\", "/") in bundled_files for f in files):
            del found[name]
    return found


def _license_of(dist: md.Distribution) -> str:
    meta = dist.metadata
    expr = meta.get("License-Expression")
    if expr:
        return expr
    lic = (meta.get("License") or "").strip()
    if lic and len(lic) < 120 and "\n" not in lic:
        return lic
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    if classifiers:
        return "; ".join(classifiers)
    return "see the licence text below" if lic else "not stated in the package metadata"


def _license_texts(dist: md.Distribution) -> list[tuple[str, str]]:
    texts = []
    for f in dist.files or []:
        name = Path(str(f)).name.upper()
        if name.startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")) and ".dist-info" in str(f):
            try:
                texts.append((str(f), Path(dist.locate_file(f)).read_text(encoding="utf-8", errors="replace")))
            except OSError:
                continue
    return texts


def write_notices(path: Path, pure: Iterable, binaries: Iterable, datas: Iterable) -> int:
    """Write THIRD-PARTY-NOTICES.txt (a summary table, the Qt LGPL notice, then every licence text);
    returns the number of distributions listed."""
    dists = bundled_distributions(list(pure), list(binaries), list(datas))
    lines = ["LiverPlan bundles the following third-party software. Each is used under its own licence;",
             "the licence texts follow the table (generated at build time from the bundled packages' metadata).",
             "", f"{'Package':38s} {'Version':16s} Licence", "-" * 100]
    for name in sorted(dists, key=str.lower):
        d = dists[name]
        lines.append(f"{name:38s} {d.version:16s} {_license_of(d)}")
    lines += ["", "Qt (LGPL-3.0)", "-" * 13, QT_LGPL_NOTICE,
              "Python itself: Python Software Foundation License (PSF-2.0), https://docs.python.org/3/license.html",
              ""]
    for name in sorted(dists, key=str.lower):
        for fname, text in _license_texts(dists[name]):
            lines += ["=" * 100, f"{name} {dists[name].version}: {fname}", "=" * 100, text.rstrip(), ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(dists)
