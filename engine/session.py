"""What the desktop application remembers between runs (no Qt): recent cases, autosaved edits, and a
time-left estimate for long work.

Everything lives in the user's data folder (engine.paths.user_data_dir(); the environment variable
LIVERPLAN_DATA_DIR overrides it, which tests use to stay inside a temporary folder):

- ``recent.json``: the last opened cases (most recent first).
- ``autosave/<key>/labels.npz`` + ``meta.json``: the label map of a case with unsaved edits, written
  atomically; offered back after a crash when the same case is opened (or the app starts again).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .io.atomic import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

MAX_RECENT = 10


def data_dir() -> Path:
    """The user's LiverPlan data folder (created when missing)."""
    try:
        from .paths import user_data_dir  # owned by the inference area
        d = Path(user_data_dir())
    except ImportError:  # pragma: no cover - only while engine.paths does not exist yet
        env = os.environ.get("LIVERPLAN_DATA_DIR")
        d = Path(env) if env else Path.home() / ".local" / "share" / "LiverPlan"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------------------------
class RecentCases:
    """The list of recently opened cases (paths as strings, most recent first)."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        self.path = (folder or data_dir()) / "recent.json"

    def load(self) -> list[str]:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
            return [str(p) for p in items if isinstance(p, str)][:MAX_RECENT]
        except (OSError, ValueError):
            return []

    def add(self, path: str | os.PathLike) -> list[str]:
        p = str(Path(path).resolve())
        items = [p] + [x for x in self.load() if x != p]
        items = items[:MAX_RECENT]
        try:
            write_text_atomic(self.path, json.dumps(items, indent=1), overwrite=True)
        except Exception as exc:  # a read-only home must not stop the app
            log.warning("could not save the recent-cases list: %s", exc)
        return items


# ---------------------------------------------------------------------------------------------
@dataclass
class AutosaveEntry:
    key: str
    folder: Path
    case_source: str
    case_name: str
    shape_zyx: tuple[int, int, int]
    saved_at: float
    description: str

    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))


def case_key(source: str, shape_zyx) -> str:
    """Stable key of a case: its source path (or demo name) and grid size."""
    h = hashlib.sha1(f"{source}|{tuple(int(v) for v in shape_zyx)}".encode()).hexdigest()
    return h[:16]


class AutosaveStore:
    """Autosaved label maps of cases with unsaved edits (one per case)."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        self.root = (folder or data_dir()) / "autosave"

    def save(self, source: str, name: str, labels: np.ndarray, description: str = "") -> Path:
        """Write the label map (uint8, (z, y, x), canonical grid) for the case; atomic."""
        key = case_key(source, labels.shape)
        folder = self.root / key
        buf = io.BytesIO()
        np.savez_compressed(buf, labels=np.ascontiguousarray(labels, dtype=np.uint8))
        write_bytes_atomic(folder / "labels.npz", buf.getvalue(), overwrite=True)
        meta = {"case_source": source, "case_name": name, "shape_zyx": list(labels.shape),
                "saved_at": time.time(), "description": description}
        write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1), overwrite=True)
        return folder

    def entries(self) -> list[AutosaveEntry]:
        out = []
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            try:
                meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
                if not (folder / "labels.npz").is_file():
                    continue
                out.append(AutosaveEntry(folder.name, folder, meta["case_source"], meta["case_name"],
                                         tuple(meta["shape_zyx"]), float(meta["saved_at"]),
                                         meta.get("description", "")))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(out, key=lambda e: -e.saved_at)

    def find(self, source: str, shape_zyx) -> Optional[AutosaveEntry]:
        key = case_key(source, shape_zyx)
        return next((e for e in self.entries() if e.key == key), None)

    def load(self, entry: AutosaveEntry) -> np.ndarray:
        with np.load(entry.folder / "labels.npz") as z:
            labels = z["labels"]
        if tuple(labels.shape) != tuple(entry.shape_zyx):
            raise ValueError("autosave is damaged (shape differs from its record)")
        return labels

    def discard(self, source: str, shape_zyx) -> None:
        folder = self.root / case_key(source, shape_zyx)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
class EtaEstimator:
    """Time left for a stage from its progress so far (seconds; None until it can be estimated)."""

    def __init__(self) -> None:
        self.stage: Optional[str] = None
        self.t0 = 0.0

    def update(self, stage: str, done: int, total: int, now: Optional[float] = None) -> Optional[float]:
        now = time.monotonic() if now is None else now
        if stage != self.stage:
            self.stage, self.t0 = stage, now
            return None
        if total <= 0 or done <= 0 or done > total:
            return None
        elapsed = now - self.t0
        return max(elapsed * (total - done) / done, 0.0)

    @staticmethod
    def format(seconds: Optional[float]) -> str:
        if seconds is None:
            return ""
        if seconds < 60:
            return f"about {max(int(round(seconds)), 1)} s left"
        return f"about {int(seconds // 60)} min {int(seconds % 60):02d} s left"
