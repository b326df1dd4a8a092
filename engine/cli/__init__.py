"""Headless command-line interface, one module per subcommand.

Each module exposes ``add_arguments(parser)`` (cheap: argparse only) and ``run(args) -> int``, importing
heavy libraries inside ``run``. Errors meant for the user are raised as engine.errors.LiverPlanError.
"""
