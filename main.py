"""LiverPlan entry point.

No arguments: the desktop application on the built-in demo case. Subcommands: the headless CLI.
Heavy libraries (Qt, torch, nnunetv2, SimpleITK) are imported only inside the command that needs them,
so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# (command, module under engine.cli, one-line help). A module that is not present is simply not offered.
COMMANDS: list[tuple[str, str, str]] = [
    ("gui", "gui_launcher", "open the desktop application (the default with no arguments)"),
    ("info", "info", "describe a CT file or DICOM folder: series, geometry, contrast phase"),
    ("phantom", "phantom", "write synthetic portal-phase CT phantoms with five-structure labels"),
    ("measure", "measure", "volumes, tumour burden and the lesion table of a CT + label map"),
    ("plan", "plan", "Couinaud segments, lesion locations and vessel distances, virtual resections (FLR)"),
    ("report", "report", "the tumour-board report: PDF, HTML and DICOM Encapsulated PDF of a CT + labels"),
    ("export", "export", "export a label map (NIfTI/NRRD/.seg.nrrd), meshes (STL/OBJ/VTP), measurements"),
    ("segment", "segment", "segment CTs with a local nnU-Net v2 model"),
    ("models", "models", "list, install and inspect segmentation models"),
    ("evaluate", "evaluate", "evaluate predictions against references with the study's metric suite"),
    ("train", "train", "build an nnU-Net dataset from a cohort, train, evaluate and export a model"),
    ("compare", "compare", "two time points: register the follow-up onto the baseline, match and measure every lesion"),
]


def _available() -> list[tuple[str, str, str]]:
    out = []
    for name, mod, helptext in COMMANDS:
        if name == "gui" or importlib.util.find_spec(f"engine.cli.{mod}") is not None:
            out.append((name, mod, helptext))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverplan",
        description="LiverPlan: liver, vessel and CRLM segmentation and measurement from portal-phase CT.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--version", action="store_true",
                        help="print the version, build, library versions, compute device and data folders")
    parser.add_argument("--self-test", action="store_true",
                        help="segment, measure and export a small phantom with the demo model; exit 0 when all hold")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod, helptext in _available():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == "gui":
            p.add_argument("path", nargs="?", help="CT file or DICOM folder to open (default: demo case)")
            p.add_argument("--labels", help="label map to open onto the CT")
            continue
        importlib.import_module(f"engine.cli.{mod}").add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def _run_gui(path: str | None = None, labels: str | None = None) -> int:
    if importlib.util.find_spec("gui.app") is None:
        # Until the desktop application exists, show what it would open: the demo case's measurements.
        from engine.cli import demo
        return demo.print_demo_measurements()
    from gui.app import run_app
    return run_app(path=path, labels=labels)


def _open_shortcut(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``liverplan FILE`` (a desktop entry's "Open with", a file dropped on the icon) means ``liverplan gui
    FILE``: a first argument that is no command but a path (existing, or with a folder or CT suffix)."""
    import os

    if not argv or argv[0].startswith("-"):
        return argv
    commands = {name for name, _, _ in _available()}
    first = argv[0]
    if first in commands:
        return argv
    if os.path.exists(first) or os.sep in first or "/" in first or first.lower().endswith(
            (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")):
        return ["gui", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    argv = _open_shortcut(argv, parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.version or args.self_test:
        from engine import about, selftest
        if args.version:
            print(about.format_about(about.about_info()))
        return selftest.main(sys.stdout) if args.self_test else 0
    if args.command in (None, "gui"):
        return _run_gui(getattr(args, "path", None), getattr(args, "labels", None))
    from engine.errors import LiverPlanError
    from engine.progress import Cancelled
    try:
        return int(importlib.import_module(f"engine.cli.{args._module}").run(args) or 0)
    except LiverPlanError as err:
        print(f"liverplan {args.command}: {err}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print(f"liverplan {args.command}: cancelled.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the output went into a pipe that closed early (`liverplan models show demo | head`): not a failure;
        # point stdout at nothing so that the interpreter's final flush does not fail again
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())
