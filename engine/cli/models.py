"""``liverplan models list|install ZIP|install-folder DIR|show M``: the segmentation models LiverPlan can use."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="list bundled and installed models")
    p = sub.add_parser("install", help="install a model zip (from nnUNetv2_export_model_to_zip)")
    p.add_argument("zip", help="the model zip")
    p.add_argument("--name", help="installed name (default: the card's name or the zip's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    p.add_argument("--label-map", help="JSON file or preset mapping the model's labels to LiverPlan structures "
                                       "(needed for a model whose labels LiverPlan does not know; saved with it)")
    p = sub.add_parser("install-folder", help="install every model zip in a folder (release zips carried over)")
    p.add_argument("folder", help="folder holding the .zip files")
    p.add_argument("--overwrite", action="store_true", help="replace installed models of the same names")
    p = sub.add_parser("show", help="show a model's card and label mapping")
    p.add_argument("model", help="model folder, installed name, or 'demo'")
    p.add_argument("--label-map", help="JSON file or preset mapping the model's labels to LiverPlan structures")


def run(args: argparse.Namespace) -> int:
    from engine.models import discover_models, find_model, install_model_zip
    from engine.paths import user_models_dir

    if args.models_command == "list":
        skipped: list = []
        models = discover_models(skipped=skipped)
        if not models:
            print(f"No models found (install one with 'liverplan models install ZIP'; they go to "
                  f"{user_models_dir(create=False)}).")
        from engine.models import installed_name, runs_by_default
        from engine.releases import MODEL_SETS
        for m in models:
            runs = (f"--model {installed_name(m.path)}" if runs_by_default(m, models)
                    else f"another configuration of {installed_name(m.path)}: --model {m.path}")
            print(f"{m.headline()}\n  {runs}{'   <- runs' if runs_by_default(m, models) else ''}\n  {m.path}\n"
                  f"  structures: {', '.join(m.structures())}\n  licence: {m.card.licence or 'not stated'}")
        releases = {m.release for m in models if m.release}
        for ms in MODEL_SETS:
            have = [k for k in ms.parts if k in releases]
            if have:
                missing = [k for k in ms.parts if k not in releases]
                print(f"model set: {ms.name}\n  --model \"{ms.name}\"" + (
                    f"\n  not complete: install {', '.join(missing)}" if missing else "   <- all parts installed"))
        for folder, reason in skipped:
            print(f"not usable: {folder}\n  {reason}")
        return 0
    if args.models_command == "install-folder":
        from engine.models import install_model_folder

        done, failed = install_model_folder(args.folder, overwrite=args.overwrite)
        for m in done:
            print(f"installed: {m.headline()}\n  {m.path}")
        for z, reason in failed:
            print(f"not installed: {z.name}\n  {reason}")
        return 0 if not failed else 1
    if args.models_command == "install":
        m = install_model_zip(args.zip, overwrite=args.overwrite, name=args.name, label_map=args.label_map)
        print(f"installed: {m.headline()}\n  {m.path}")
        for w in m.warnings:
            print(f"  warning: {w}")
        return 0
    m = find_model(args.model, label_map=args.label_map)
    print(m.describe())
    return 0
