"""The built-in demo case on the command line: its measurement table and lesion table."""
from __future__ import annotations

import argparse


def print_demo_measurements() -> int:
    """Build the demo phantom, measure it and print the measurement and lesion tables. Returns 0."""
    from engine.measure import format_tables, measure
    from engine.phantom import demo_case

    case = demo_case()
    report = measure(case)
    print(f"LiverPlan demo case ({case.provenance.series_description}): {case.geometry.describe()}")
    print(format_tables(report))
    print("")
    print("Total liver volume: " + report.definitions["total_liver_volume"])
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the demo case is fixed."""


def run(args: argparse.Namespace) -> int:
    return print_demo_measurements()
