"""The tumour-board report of a follow-up scan with ``--comparison comparison.json`` (issue 22): a section
"Change since the baseline scan" with the RECIST 1.1 and volumetric lines, the lesion change table, the
vanished lesion at its former place, and each resection scenario saying whether it leaves that site; a
comparison made for another scan is refused in words and nothing is written."""
from __future__ import annotations

import html as _html
import json
import re

import pytest

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def followup_with_comparison(tmp_path_factory):
    from engine.compare import Comparison
    from engine.compare.synthetic import make_followup
    from engine.io.labelmaps import write_image, write_label_map
    from engine.phantom import make_phantom

    d = tmp_path_factory.mktemp("vanished_report")
    base = make_phantom(seed=3, shape=(96, 128, 128), n_lesions=3, lesion_diameters_mm=(28, 22, 16))
    fu, _truth = make_followup(base, {2: ("vanish",), 1: ("shrink", 0.6)})
    comp = Comparison(base, fu).run()
    comp.write(d / "cmp")
    ct, lab = d / "fu_ct.nii.gz", d / "fu_labels.nii.gz"
    write_image(ct, fu)
    write_label_map(lab, fu)
    return d, ct, lab, d / "cmp" / "comparison.json"


def _text(path) -> str:
    """The HTML's visible text, tags dropped, entities decoded, whitespace collapsed."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"<style.*?</style>", " ", raw, flags=re.S)
    return " ".join(_html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def test_report_has_the_change_section_and_the_vanished_site(followup_with_comparison, tmp_path, capsys):
    import main

    _d, ct, lab, cj = followup_with_comparison
    data = json.loads(cj.read_text())
    vanished = [r for r in data["lesions"] if r["kind"] == "vanished"]
    assert [r["baseline_ids"] for r in vanished] == [[2]]
    rc = main.main(["report", str(ct), str(lab), "--comparison", str(cj), "--out", str(tmp_path / "rep"),
                    "--format", "html", "--no-3d"])
    capsys.readouterr()
    assert rc == 0
    text = _text(tmp_path / "rep" / "board_report.html")
    assert "Change since the baseline scan" in text
    # the section comes before the appendix, after page 1
    assert text.index("Key figures") < text.index("Change since the baseline scan") < text.index("Appendix A")
    rec, vol = data["recist"], data["volumetric"]
    assert f"RECIST 1.1 (targets {', '.join(map(str, rec['targets']))}" in text
    assert f"sum of diameters {rec['baseline_sld_mm']:.1f} -> {rec['followup_sld_mm']:.1f} mm" in text
    assert f": {rec['category']} ({rec['category_words']})" in text
    assert f"Volumetric response: total lesion volume {vol['baseline_ml']:.1f} -> {vol['followup_ml']:.1f} mL" in text
    # the table: one row per lesion, the vanished one at -100 % with 0 mL at follow-up
    v = vanished[0]
    assert re.search(r"\b2 \*? ?vanished " + re.escape(f"{v['baseline_volume_ml']:.2f} 0.00 -100 %"), text), text
    for r in data["lesions"]:
        assert f"{r['baseline_volume_ml']:.2f} {r['followup_volume_ml']:.2f}" in text
    # the vanished lesion at its former place, as the comparison placed it on this scan
    x, y, z = v["followup_lps_mm"]
    assert (f"Lesion 2 vanished: its former place on this scan is LPS ({x:.1f}, {y:.1f}, {z:.1f}) mm, slice "
            f"{int(round(v['followup_zyx'][0])) + 1}") in text
    assert "persist microscopically" in text
    # every scenario of the report (the default right and left hepatectomy) says what it does with the site
    notes = re.findall(r"Scenario '([^']+)' (leaves|removes) the site of vanished lesion 2", text)
    assert {n for n, _ in notes} == {"right hepatectomy", "left hepatectomy"}, text
    assert "leaves" in {k for _, k in notes}      # the site lies in one hemiliver: the other resection leaves it
    # page 1 (it stands alone) says it too: the responses, the vanished lesion, the scenarios leaving its site
    leaving = [n for n, k in notes if k == "leaves"]
    page1 = text[:text.index("What made the labels")]
    assert (f"Change since the baseline scan RECIST 1.1 {rec['category']}; volumetric {vol['category']}; "
            f"1 vanished (2), 0 new; the site of vanished lesion 2 stays after: {', '.join(leaving)}") in page1


def test_report_sentences_follow_the_scenario(followup_with_comparison, tmp_path, capsys):
    """A scenario that removes the site's own segment does not say it leaves it; one that spares it does."""
    import main
    from engine.compare.planning_hook import read_vanished_sites
    from engine.cli.measure import load_case_with_labels
    from engine.planning.planner import Planner

    _d, ct, lab, cj = followup_with_comparison
    case = load_case_with_labels(str(ct), str(lab))
    site = read_vanished_sites(cj, case.geometry)[0]
    planner = Planner(case.labels, case.geometry).run()
    seg = planner.segment_at([int(round(v)) for v in case.geometry.physical_to_index(site.centre_lps_mm)])
    other = 3 if seg not in (2, 3) else 6
    rc = main.main(["report", str(ct), str(lab), "--comparison", str(cj), "--out", str(tmp_path / "rep"),
                    "--format", "html", "--no-3d", "--resect", f"spares={other}", "--language", "fr",
                    "--anonymise"])
    capsys.readouterr()
    assert rc == 0
    text = _text(tmp_path / "rep" / "board_report.html")
    assert "Évolution depuis l'examen initial" in text and "La lésion 2 a disparu" in text
    assert "Réponse volumétrique" in text and "partial response" not in text and "stable disease" not in text
    # anonymised: neither scan's name (file names may carry a patient's) nor the comparison's file name
    raw = (tmp_path / "rep" / "board_report.html").read_text(encoding="utf-8")
    data = json.loads(cj.read_text())
    for name in (data["baseline"]["name"], data["followup"]["name"], "comparison.json"):
        assert name not in raw
    assert "(nom masqué : anonymisé)" in text
    assert "Scenario 'spares' leaves the site of vanished lesion 2" in text


def test_report_refuses_a_comparison_of_another_scan(followup_with_comparison, tmp_path, capsys):
    import main

    _d, ct, lab, cj = followup_with_comparison
    d = json.loads(cj.read_text())
    d["followup"]["geometry"]["shape_zyx"] = [10, 20, 30]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(d))
    rc = main.main(["report", str(ct), str(lab), "--comparison", str(bad), "--out", str(tmp_path / "rep"),
                    "--format", "html", "--no-3d"])
    err = capsys.readouterr().err
    assert rc == 2 and "was made for a follow-up scan of (10, 20, 30) voxels" in err
    assert not (tmp_path / "rep").exists()
    # the same number of voxels but another scan (voxel size, position): refused too
    for key, value in (("spacing_zyx_mm", [1.0, 1.0, 1.0]), ("origin_lps_mm", [0.0, 0.0, 0.0])):
        d = json.loads(cj.read_text())
        d["followup"]["geometry"][key] = value
        bad.write_text(json.dumps(d))
        rc = main.main(["report", str(ct), str(lab), "--comparison", str(bad), "--out", str(tmp_path / "rep"),
                        "--format", "html", "--no-3d"])
        err = capsys.readouterr().err
        assert rc == 2 and "with other voxels or another position" in err, err
    # not a comparison at all, and a damaged lesion table: refused in words too
    (tmp_path / "plan.json").write_text(json.dumps({"kind": "planning"}))
    rc = main.main(["report", str(ct), str(lab), "--comparison", str(tmp_path / "plan.json"), "--out",
                    str(tmp_path / "rep"), "--format", "html", "--no-3d"])
    assert rc == 2 and "is not a LiverPlan comparison file" in capsys.readouterr().err
    d = json.loads(cj.read_text())
    d["lesions"][0]["baseline_volume_ml"] = "lots"
    (tmp_path / "damaged.json").write_text(json.dumps(d))
    rc = main.main(["report", str(ct), str(lab), "--comparison", str(tmp_path / "damaged.json"), "--out",
                    str(tmp_path / "rep"), "--format", "html", "--no-3d"])
    assert rc == 2 and "write the comparison again" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_site_lookup_equals_the_scenario_masks():
    """sites_left reads the scenario from the resection model's voxel list (no full-grid volume): the same
    values as Planner.masks at every point of a site, also for a site reaching out of the planning crop."""
    import numpy as np

    from engine.compare.planning_hook import VanishedSite, _site_voxels, _values_at
    from engine.measure import measure
    from engine.phantom import make_phantom
    from engine.planning.planner import Planner
    from engine.planning.resection import Scenario

    case = make_phantom(seed=3, shape=(64, 96, 96), n_lesions=2)
    p = Planner(case.labels, case.geometry).run()
    centres = [tuple(l.centroid_lps_mm) for l in measure(case).lesions]
    centres.append(tuple(case.geometry.index_to_physical(np.array([2.0, 2.0, 2.0]))))   # the grid's corner
    seen = set()
    for segs in ([5, 6, 7, 8], [2, 3, 4], []):
        sc = Scenario("s", segments=segs)
        p.set_scenario(sc)
        for c in centres:
            pts = _site_voxels(VanishedSite(1, c, 25.0, 50.0), p.full_geometry)
            want = p.masks(sc)[tuple(pts.T)]
            assert np.array_equal(_values_at(p, sc, pts), want)
            seen |= set(np.unique(want).tolist())
    assert seen == {0, 1, 2}        # outside the liver, remnant and resected points were all compared
