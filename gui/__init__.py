"""LiverPlan desktop application (PySide6 + pyqtgraph + pyvistaqt). Thin: the numbers come from engine/."""
import sys as _sys

# Importing torch after the 3D pane has created its OpenGL context (Mesa llvmpipe, which links LLVM)
# makes torch load triton's own LLVM build, and the process dies with a segmentation fault (seen here:
# open the app, then run a segmentation). The app never uses torch.compile, so triton is hidden from
# torch in the GUI process only; torch then reports "no triton" and runs normally.
if "triton" not in _sys.modules:
    _sys.modules["triton"] = None  # type: ignore[assignment]
