"""Where LiverPlan keeps its files: the user's data folder and the bundled resources.

``LIVERPLAN_DATA_DIR`` overrides the user's data folder (tests, portable installs). The default follows
each platform's convention: ``~/.local/share/LiverPlan`` (or ``$XDG_DATA_HOME/LiverPlan``) on Linux,
``~/Library/Application Support/LiverPlan`` on macOS, ``%LOCALAPPDATA%\\LiverPlan`` on Windows.
Inside it live ``models/`` (installed segmentation models), ``autosave/`` and ``recent.json``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "LiverPlan"


def user_data_dir(create: bool = True) -> Path:
    """The user's LiverPlan data folder (created on first use unless ``create`` is False)."""
    env = os.environ.get("LIVERPLAN_DATA_DIR")
    if env:
        path = Path(env).expanduser()
    elif sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Local")
        path = Path(base) / APP_NAME
    elif sys.platform == "darwin":
        path = Path.home() / "Library" / "Application Support" / APP_NAME
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(base) / APP_NAME
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def user_models_dir(create: bool = True) -> Path:
    """Folder holding the models the user installed (one sub-folder per model)."""
    path = user_data_dir(create) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def autosave_dir(create: bool = True) -> Path:
    """Folder for the GUI's autosaved work."""
    path = user_data_dir(create) / "autosave"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def recent_file() -> Path:
    """The JSON list of recently opened cases."""
    return user_data_dir() / "recent.json"


def resources_dir() -> Path:
    """The application's bundled resources (``resources/`` beside ``engine/``; inside a frozen bundle,
    the folder PyInstaller unpacked)."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def bundled_models_dir() -> Path:
    """Models shipped with the application (``resources/models/<name>/``)."""
    return resources_dir() / "models"
