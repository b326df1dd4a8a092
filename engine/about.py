"""What this LiverPlan is: version, build, library versions, compute device, data folders, licences.

Shown by ``liverplan --version`` and the desktop app's About box (gui/about.py). In a frozen bundle the
version, build date and commit come from ``build_info.json`` and the licences from
``THIRD-PARTY-NOTICES.txt``, both written at build time by installer/notices.py. Nothing here imports Qt:
the Qt version is read from the installed distribution's metadata (the GUI adds the running Qt's own).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Optional

from engine import paths

log = logging.getLogger(__name__)

QT_LICENCE_NOTE = ("Qt and Qt for Python (PySide6) are used under the GNU LGPL version 3; they are separate "
                   "libraries in the application folder that can be replaced. Full licence texts: "
                   "THIRD-PARTY-NOTICES.txt.")


def is_frozen() -> bool:
    """True inside the PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def bundle_root() -> Path:
    """The folder holding the frozen app's files (``_internal``), or the source tree's root."""
    return Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[1]))


def notices_path() -> Optional[Path]:
    """THIRD-PARTY-NOTICES.txt of this bundle (None when running from source, where none is generated)."""
    p = bundle_root() / "THIRD-PARTY-NOTICES.txt"
    return p if p.is_file() else None


def _version(dist_names: tuple[str, ...]) -> str:
    for name in dist_names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return "not found"


def _build_info() -> dict[str, str]:
    info_file = bundle_root() / "build_info.json"
    if is_frozen() and info_file.is_file():
        try:
            return json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("build_info.json unreadable: %s", exc)
    text = ""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8")
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    version = m.group(1) if m else _version(("liverplan",))
    return {"version": version, "build_date": "", "commit": ""}


def liverplan_version() -> str:
    """LiverPlan's version alone (no torch import: reports and file headers ask for it)."""
    return str(_build_info().get("version", "unknown"))


def device_summary() -> str:
    """The compute device segmentation will use, in words (imports torch: ~1-2 s)."""
    try:
        import torch

        from engine.inference.device import available_devices
    except ImportError as exc:  # a broken bundle: say it rather than crash the About box
        return f"unknown (torch cannot be loaded: {exc})"
    devices = available_devices()
    best = devices[0]
    if best.startswith("cuda"):
        try:
            name = torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - the name is only informative
            name = "NVIDIA GPU"
        return f"{best} ({name})"
    if best == "mps":
        return "mps (Apple GPU)"
    if torch.version.cuda:
        return ("cpu: no usable NVIDIA GPU or driver found, so segmentation runs on the processor "
                "(slower; nothing to install for that)")
    return "cpu"


def about_info(probe_device: bool = True, load_torch: bool = True) -> dict[str, Any]:
    """Everything the About box and ``--version`` show. ``probe_device`` imports torch to name the device;
    ``load_torch=False`` (the About box's first, instant view) reads torch's version from its package
    metadata and leaves CUDA, cuDNN and the device to a second call off the GUI thread."""
    b = _build_info()
    if is_frozen():
        build = f"built {b.get('build_date') or 'on an unknown date'}, commit {b.get('commit') or 'unknown'}"
    else:
        build = "running from the source tree"
    info: dict[str, Any] = {
        "version": b.get("version", "unknown"),
        "build": build,
        "python": sys.version.split()[0],
        "torch": _version(("torch",)),
        "nnunetv2": _version(("nnunetv2",)),
        "qt": _version(("PySide6-Essentials", "PySide6")),
        "vtk": _version(("vtk",)),
        "data_folder": str(paths.user_data_dir(create=False)),
        "models_folder": str(paths.user_models_dir(create=False)),
        "resources_folder": str(paths.resources_dir()),
        "notices": str(notices_path()) if notices_path() else "generated when the installer is built",
    }
    if not load_torch:
        if probe_device:
            raise ValueError("probe_device needs load_torch")
        for key in ("cuda", "cudnn", "device"):
            info[key] = "finding out…"
        return info
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda or "none (CPU/MPS build)"
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        # cuDNN 9 reports major*10000 + minor*100 + patch (92400 = 9.24.0)
        info["cudnn"] = (f"{cudnn // 10000}.{cudnn % 10000 // 100}.{cudnn % 100}" if cudnn and cudnn >= 90000
                         else str(cudnn) if cudnn else "not loaded")
    except ImportError as exc:
        info["cuda"] = f"unknown (torch cannot be loaded: {exc})"
    if probe_device:
        info["device"] = device_summary()
    return info


LABELS = [("version", "LiverPlan"), ("build", "Build"), ("python", "Python"), ("torch", "PyTorch"),
          ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("nnunetv2", "nnU-Net"), ("qt", "Qt for Python"), ("vtk", "VTK"),
          ("device", "Compute device"), ("data_folder", "Your data folder"),
          ("models_folder", "Installed models"), ("resources_folder", "Application resources"),
          ("notices", "Third-party licences")]


def format_about(info: dict[str, Any]) -> str:
    """The lines of ``liverplan --version``."""
    w = max(len(label) for _, label in LABELS)
    lines = [f"{label:{w}s}  {info[key]}" for key, label in LABELS if key in info]
    lines.append(QT_LICENCE_NOTE)
    return "\n".join(lines)
