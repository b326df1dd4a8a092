"""PyInstaller runtime hook: runs inside the frozen app before main.py.

The windowed Windows executable has no console: sys.stdout/sys.stderr are None there and the first log or
progress line would raise. Point them at nothing instead (the CLI executable keeps its console).
"""
import os
import sys

if sys.stdout is None:
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
if sys.stderr is None:
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
