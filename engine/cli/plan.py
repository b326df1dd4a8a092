"""``liverplan plan``: where each lesion sits (segments, hemiliver, vessel distances), the segment
volumes, and the figures of virtual resections (FLR, standardised FLR)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct", help="CT file (NIfTI/NRRD/MHA) or DICOM folder")
    parser.add_argument("labels", help="label map (NIfTI/NRRD/MHA, 3D Slicer .seg.nrrd, or a folder of masks)")
    parser.add_argument("--labels-mapping", metavar="MAP",
                        help="JSON label mapping or a preset name (ircadb, totalsegmentator) for foreign labels")
    parser.add_argument("--series", help="DICOM series key when the folder holds several series")
    parser.add_argument("--segments", metavar="FILE",
                        help="a Couinaud segment map (values 0-8, e.g. a Couinaud model's output) that replaces "
                             "the estimate from the vessels")
    parser.add_argument("--segments-mapping", metavar="JSON",
                        help='JSON mapping of the segment map\'s values, e.g. {"I": [1], "II": [2], ...} or '
                             '{"liver_segment_1": 1, ...}')
    parser.add_argument("--resect", metavar="SEGMENTS", action="append", default=[],
                        help="a scenario resecting these segments, e.g. 5,6,7,8 or V-VIII (repeatable); "
                             "name it with NAME=SEGMENTS, e.g. 'right hepatectomy=5-8'")
    parser.add_argument("--wedge", metavar="LESIONS", action="append", default=[],
                        help="a scenario of wedges around these lesions, e.g. 1,3 (repeatable; NAME=LESIONS names it)")
    parser.add_argument("--margin", metavar="MM", type=float, default=10.0,
                        help="wedge margin around each lesion, clipped to the liver (default 10 mm)")
    parser.add_argument("--scenario", metavar="SPEC", action="append", default=[],
                        help="a combined scenario NAME:segments=5,6;wedges=2;margin=5 (repeatable)")
    parser.add_argument("--scenarios-from", metavar="JSON",
                        help="the scenarios of a planning.json written earlier for this case (e.g. by the window)")
    parser.add_argument("--height", metavar="CM", type=float, help="patient height (cm) for the standardised FLR")
    parser.add_argument("--weight", metavar="KG", type=float, help="patient weight (kg) for the standardised FLR")
    parser.add_argument("--condition", choices=("normal", "chemotherapy", "cirrhosis"), default="normal",
                        help="liver condition for the reference minimum FLR (default normal)")
    parser.add_argument("--contact", metavar="MM", type=float, default=1.0,
                        help="distance at or below which a lesion counts as in contact with a vessel (default 1 mm)")
    parser.add_argument("--vanished", metavar="COMPARISON_JSON",
                        help="the comparison.json of 'liverplan compare' whose follow-up is this CT: each scenario "
                             "says whether it leaves the site of a vanished lesion")
    parser.add_argument("--out", metavar="DIR", help="write planning.json and the CSV tables into DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _named(spec: str, default: str) -> tuple[str, str]:
    if "=" in spec and not spec.strip().startswith("="):
        name, rest = spec.split("=", 1)
        if name.strip() and not name.strip()[0].isdigit():
            return name.strip(), rest
    return default, spec


def _lesion_ids(text: str) -> list[int]:
    from engine.errors import InputError

    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise InputError(f"'{part}' is not a lesion number; lesions are numbered 1, 2, ... as in the lesion table.")
        out.append(int(part))
    return out


def build_scenarios(args) -> list:
    """The scenarios the command line asks for (engine.planning.resection.Scenario)."""
    from engine.errors import InputError
    from engine.planning.resection import Scenario, parse_segments

    out = []
    for spec in args.resect:
        name, rest = _named(spec, "")
        segs = parse_segments(rest)
        out.append(Scenario(name or "resect " + ",".join(str(s) for s in segs), segments=segs, margin_mm=args.margin))
    for spec in args.wedge:
        name, rest = _named(spec, "")
        ids = _lesion_ids(rest)
        out.append(Scenario(name or "wedge " + ",".join(str(i) for i in ids), wedges=ids, margin_mm=args.margin))
    for spec in args.scenario:
        if ":" not in spec:
            raise InputError(f"--scenario '{spec}' needs the form NAME:segments=5,6;wedges=2;margin=5.")
        name, rest = spec.split(":", 1)
        sc = Scenario(name.strip(), margin_mm=args.margin)
        for item in rest.split(";"):
            if not item.strip():
                continue
            if "=" not in item:
                raise InputError(f"In --scenario '{spec}', '{item}' needs KEY=VALUE (segments, wedges, margin).")
            k, v = (t.strip() for t in item.split("=", 1))
            if k == "segments":
                sc.segments = parse_segments(v)
            elif k == "wedges":
                sc.wedges = _lesion_ids(v.replace(" ", ","))
            elif k == "margin":
                sc.margin_mm = float(v)
            else:
                raise InputError(f"In --scenario '{spec}', '{k}' is none of segments, wedges, margin.")
        out.append(sc)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise InputError("Two scenarios have the same name; name them (NAME=...).")
    return out


def format_report(planner) -> str:
    """The printed tables: segment estimate, segment volumes, lesion locations, scenarios."""
    from engine.planning.resection import figures_text

    est = planner.estimate
    lines = [est.status_text]
    lines += ["  " + q for q in est.quality]
    vols = planner.segment_volumes()
    if vols:
        lines.append("")
        lines.append("Segment volumes (mL, an estimate unless from a segment map):")
        lines.append("  " + "  ".join(f"{k} {v:.0f}" for k, v in vols.items()))
    lines.append("")
    if not planner.lesions:
        lines.append("No lesions are labelled.")
    else:
        lines.append(f"{'Lesion':>6} {'mL':>8}  {'Segments':<22} {'Hemiliver':<9}  "
                     f"{'Portal vein':<36} {'Hepatic veins':<38} {'IVC':<20}")
        for l in planner.lesions:
            def d(s):
                v = l.distances.get(s)
                if v is None or v.distance_mm is None:
                    return "not labelled"
                return f"{v.distance_mm:.1f} mm {v.branch}{' CONTACT' if v.contact else ''}"
            lines.append(f"{l.id:>6} {l.volume_ml:>8.2f}  {(l.segments_text or '-'):<22} {(l.hemiliver or '-'):<9}  "
                         f"{d('portal_vein'):<36} {d('hepatic_veins'):<38} {d('ivc'):<20}")
        b = planner.bilobar()
        lines.append(f"Bilobar disease: {'unknown (hemilivers not estimated)' if b is None else ('yes' if b else 'no')}")
        lines.append(f"(distances surface to surface; contact = {planner.contact_mm:g} mm or less)")
    for fig in planner.compare():
        lines.append("")
        lines.append(figures_text(fig))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.cli.measure import load_case_with_labels
    from engine.cli.progressbar import TextProgress
    from engine.errors import InputError
    from engine.planning.planner import Planner, read_segment_map
    from engine.planning.resection import Patient

    if (args.height is None) != (args.weight is None):
        raise InputError("The standardised FLR needs both --height (cm) and --weight (kg).")
    scenarios = build_scenarios(args)
    patient = Patient(args.height, args.weight, args.condition)
    if args.out and not args.overwrite:
        for n in ("planning.json", "planning_lesions.csv", "planning_scenarios.csv", "planning_segments.csv",
                  "planning_vanished.csv"):
            if (Path(args.out).expanduser() / n).exists():
                raise InputError(f"{Path(args.out) / n} already exists; nothing was written. Use --overwrite or "
                                 "another folder.")
    progress = (lambda *a: None) if args.no_progress else TextProgress()
    case = load_case_with_labels(args.ct, args.labels, args.labels_mapping, args.series)
    seg_map, source = None, ""
    if args.segments:
        seg_map = read_segment_map(args.segments, case.geometry, args.segments_mapping)
        source = f"from the file {Path(args.segments).name}"
    elif args.segments_mapping:
        raise InputError("--segments-mapping needs --segments FILE.")
    sites = None
    if args.vanished:
        from engine.compare.planning_hook import read_vanished_sites
        sites = read_vanished_sites(args.vanished, case.geometry)
    planner = Planner(case.labels, case.geometry, seg_map, source, contact_mm=args.contact)
    planner.patient = patient
    planner.run(progress=progress)
    if args.scenarios_from:
        planner.load_scenarios(args.scenarios_from)
    for sc in scenarios:
        planner.set_scenario(sc)
    for sc in planner.scenarios.values():
        planner.figures(sc)              # a bad lesion number or missing segments fail here, before printing
    if hasattr(progress, "close"):
        progress.close()
    print(f"{case.name}: {case.geometry.describe()}")
    for w in case.provenance.warnings:
        print(f"Note: {w}")
    print(format_report(planner))
    vanished_rows = []
    if sites is not None:
        from engine.compare.planning_hook import sites_left
        print("")
        if not sites:
            print(f"Vanished lesions: none in {Path(args.vanished).name}.")
        elif not planner.scenarios:
            print(f"Vanished lesions: {len(sites)} in {Path(args.vanished).name}; give a scenario (--resect, "
                  "--wedge, --scenario) to see whether it removes their sites.")
        for sc in planner.scenarios.values():
            for note in sites_left(planner, sc, sites):
                print(note["sentence"])
                vanished_rows.append({"scenario": sc.name, **note})
    if args.out:
        paths = planner.write(args.out, overwrite=args.overwrite)
        if sites is not None:
            import csv
            import io

            from engine.io.atomic import write_text_atomic
            buf = io.StringIO()
            w = csv.DictWriter(buf, ["scenario", "lesion", "share_left_pct", "left", "sentence"], lineterminator="\n")
            w.writeheader()
            w.writerows(vanished_rows)
            paths = list(paths) + [write_text_atomic(Path(args.out).expanduser() / "planning_vanished.csv",
                                                     buf.getvalue(), overwrite=args.overwrite)]
        print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
