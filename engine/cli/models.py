"""``liverplan models list|install ZIP|show M``: the segmentation models LiverPlan can use."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="list bundled and installed models")
    p = sub.add_parser("install", help="install a model zip (from nnUNetv2_export_model_to_zip)")
    p.add_argument("zip", help="the model zip")
    p.add_argument("--name", help="installed name (default: the card's name or the zip's name)")
    p.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    p = sub.add_parser("show", help="show a model's card and label mapping")
    p.add_argument("model", help="model folder, installed name, or 'demo'")
    p.add_argument("--label-map", help="JSON mapping the model's labels to LiverPlan structures")


def run(args: argparse.Namespace) -> int:
    from engine.models import discover_models, find_model, install_model_zip
    from engine.paths import user_models_dir

    if args.models_command == "list":
        skipped: list = []
        models = discover_models(skipped=skipped)
        if not models:
            print(f"No models found (install one with 'liverplan models install ZIP'; they go to "
                  f"{user_models_dir(create=False)}).")
        from engine.models import installed_name
        for m in models:
            print(f"{m.card.headline()}\n  --model {installed_name(m.path)}\n  {m.path}\n"
                  f"  structures: {', '.join(m.structures())}")
        for folder, reason in skipped:
            print(f"not usable: {folder}\n  {reason}")
        return 0
    if args.models_command == "install":
        m = install_model_zip(args.zip, overwrite=args.overwrite, name=args.name)
        print(f"installed: {m.card.headline()}\n  {m.path}")
        for w in m.warnings:
            print(f"  warning: {w}")
        return 0
    m = find_model(args.model, label_map=args.label_map)
    print(m.describe())
    return 0
