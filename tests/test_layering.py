"""engine/ and metrics/ must never load Qt (DESIGN.md dependency rule); --help must stay instant."""
import subprocess
import sys

from realdata import REPO

QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph", "pyvistaqt", "qtpy", "PyQt5", "PyQt6")


def _loaded_modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_engine_and_metrics_import_no_qt():
    import pkgutil
    names = []
    for pkg in ("engine", "metrics"):
        for m in pkgutil.walk_packages([str(REPO / pkg)], prefix=pkg + "."):
            names.append(m.name)
    assert names, "no engine/metrics modules found"
    code = "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
    loaded = _loaded_modules_after(code)
    bad = sorted(m for m in loaded if m.split(".")[0] in QT_MODULES)
    assert not bad, f"Qt modules loaded by engine/metrics: {bad[:10]}"


def test_cli_help_does_not_import_heavy_libraries():
    code = ("import sys, main\ntry:\n    main.main(['--help'])\nexcept SystemExit:\n    pass\n")
    loaded = _loaded_modules_after(code)
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "nnunetv2", "SimpleITK", "PySide6", "vtk"))
    assert not heavy, f"--help imported {heavy[:5]}"
