"""Fonts for text in any script, in HTML, in the PDF and in the plots.

The report names cases, structures and people as they are written (Müller, Łódź, 肝臓). One font rarely
holds every script, so every writer names a STACK of families: DejaVu Sans (Latin, Greek, Cyrillic; on
every Linux), Noto Sans and Noto Sans CJK (Chinese, Japanese, Korean; Debian's fonts-noto-cjk), then the
platform's own. Browsers and WeasyPrint (fontconfig) fall back per glyph along the stack; matplotlib
(>= 3.6) does the same when given a list of families that it has found.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

#: CSS font stack (HTML and PDF).
CSS_FONT_STACK = ("\"DejaVu Sans\", \"Noto Sans\", \"Noto Sans CJK JP\", \"Noto Sans CJK SC\", \"Segoe UI\", "
                  "\"Helvetica Neue\", Arial, \"Hiragino Sans\", \"Microsoft YaHei\", sans-serif")

_MPL_WANTED = ("DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Arial", "Hiragino Sans",
               "Microsoft YaHei")


@functools.lru_cache(maxsize=1)
def matplotlib_families() -> tuple[str, ...]:
    """The families of the stack that matplotlib can find here (DejaVu Sans is bundled with matplotlib).

    matplotlib caches its font list; a font installed after that cache was built (fonts-noto-cjk) is not
    seen, so the cache is rebuilt once when a wanted family is installed but unknown to it.
    """
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    if not any(n.startswith("Noto Sans CJK") for n in names) and _fontconfig_has("Noto Sans CJK JP"):
        log.info("rebuilding matplotlib's font cache (a CJK font was installed after it was made)")
        font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
        names = {f.name for f in font_manager.fontManager.ttflist}
    found = tuple(n for n in _MPL_WANTED if n in names)
    return found or ("DejaVu Sans",)


def _fontconfig_has(family: str) -> bool:
    import shutil
    import subprocess

    if shutil.which("fc-list") is None:
        return False
    try:
        out = subprocess.run(["fc-list", family], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())
