"""The procedure report: plan.json, report.html and report.pdf agree on every number shown."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from planner.cli import main
from planner.plan import Plan, _with_targets
from planner.report import (STATEMENT, SYNTHETIC_NOTE, Figure, build_report, estimate_or_reason, render_pdf,
                            write_outputs, write_plan_report)
from planner.samples import case_names, get_case, load_case

CASE = "celiac_standard"

if CASE not in case_names():
    pytest.skip(f"sample case {CASE} is not bundled (python -m segmentation.make_samples)", allow_module_level=True)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?%?")


class _Cells(HTMLParser):
    """Tables of an HTML page as lists of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs).get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``plexplan demo`` on the 3 mm standard celiac case, run once for the module."""
    out = tmp_path_factory.mktemp("demo") / CASE
    rc = main(["demo", "--case", CASE, "--out", str(out)])
    assert rc == 0
    html_text = (out / "report.html").read_text(encoding="utf-8")
    cells = _Cells()
    cells.feed(html_text)
    return {"out": out, "plan": Plan.load(out / "plan.json"), "html": html_text, "cells": cells,
            "pdf": pdf_text(out / "report.pdf")}


@pytest.fixture(scope="module")
def built(demo_run):
    """The report model of the demo plan (built in memory, as a viewer's export would)."""
    image, labels = load_case(CASE)
    plan = demo_run["plan"]
    estimate, _ = estimate_or_reason(plan)
    return build_report(plan, image, _with_targets(labels, plan.target), estimate)


def _find_rows(tables, first_cell):
    return [row for table in tables for row in table if row and row[0] == first_cell]


def test_plan_writes_the_three_files(demo_run):
    out = demo_run["out"]
    for name in ("plan.json", "report.html", "report.pdf"):
        assert (out / name).stat().st_size > 1000
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_every_trajectory_number_agrees_with_plan_json(demo_run):
    plan, pdf = demo_run["plan"], demo_run["pdf"]
    overview = next(t for t in demo_run["cells"].tables if t[0][0] == "#")  # all ranked trajectories
    assert len(overview) == len(plan.trajectories) + 1
    pdf_lines = [" ".join(line.split()) for line in pdf.splitlines()]
    for i, t in enumerate(plan.trajectories, 1):
        near = t.details["nearest_structure"]
        expected = [str(i), t.side, t.role, "yes" if t.feasible else "no", f"{t.length_mm:.1f}",
                    f"{t.needle_length_mm:g}", f"{t.gantry_angle_deg:.1f}", f"{t.details['sagittal_angle_deg']:.1f}"]
        row = overview[i]
        assert row[:8] == expected
        assert row[9:] == [f"{t.min_clearance_mm[near]:.1f}", f"{t.risk:.3f}", f"{100 * t.p_oar_contact:.1f}%"]
        # the PDF shows the same row: its numbers in the same order on one line
        numbers = [c for c in row if NUMBER.fullmatch(c)]
        assert any(NUMBER.findall(line)[:len(numbers)] == numbers and line.startswith(f"{i} {t.side}")
                   for line in pdf_lines), f"trajectory {i} row not found in the PDF: {row}"


def test_primary_needle_details_agree(demo_run):
    plan, html_text, pdf = demo_run["plan"], demo_run["html"], demo_run["pdf"]
    for t in plan.primary:
        entry = "(" + ", ".join(f"{v:.1f}" for v in t.entry_lps_mm) + ")"
        tip = "(" + ", ".join(f"{v:.1f}" for v in t.target_lps_mm) + ")"
        assert entry in html_text and entry in pdf
        assert tip in html_text and tip in pdf
    for table in demo_run["cells"].tables:
        if table[0][:2] == ["Structure", "Clearance mm"]:
            for row in table[1:]:
                assert re.search(rf"{re.escape(row[0])}\s+{re.escape(row[1])}\s+", pdf), row


def test_html_and_pdf_show_the_same_numbers(demo_run):
    html_numbers = Counter(n for table in demo_run["cells"].tables for row in table for cell in row
                           for n in NUMBER.findall(cell))
    pdf_numbers = Counter(NUMBER.findall(demo_run["pdf"]))
    missing = {n: c - pdf_numbers[n] for n, c in html_numbers.items() if pdf_numbers[n] < c}
    assert not missing, f"numbers of the HTML tables missing from the PDF: {missing}"
    assert sum(html_numbers.values()) > 200


def test_analgesia_numbers_match_the_model_on_plan_json(demo_run):
    from planner.analgesia import inputs_from_plan, predict

    plan, pdf = demo_run["plan"], demo_run["pdf"]
    estimate = predict(inputs_from_plan(plan.to_dict()))
    median = f"{estimate.median_relief_weeks:.1f}"
    row = _find_rows(demo_run["cells"].tables, "Median relief if it responds (weeks)")
    assert row and row[0][1] == median
    assert re.search(rf"Median relief if it responds \(weeks\)\s+{re.escape(median)}", pdf)
    response = f"{100 * estimate.p_response:.1f}%"
    assert _find_rows(demo_run["cells"].tables, "P(initial response)")[0][1].startswith(response)
    weeks = next(t for t in demo_run["cells"].tables if t[0][0] == "Week")
    assert [row[:2] for row in weeks[1:]] == [[f"{tp.weeks:g}", f"{100 * tp.p_relieved:.1f}%"]
                                              for tp in estimate.timepoints]


def test_statement_synthetic_label_and_figures(demo_run):
    html_text, pdf = demo_run["html"], " ".join(demo_run["pdf"].split())
    for text in (STATEMENT, SYNTHETIC_NOTE):
        assert text in html_text
        assert " ".join(text.split()) in pdf
    assert "not for clinical decisions" in pdf.lower()
    images = demo_run["cells"].images
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)  # axial, 2 reslices, 3D, curve
    assert "http://" not in html_text and "https://" not in html_text  # self-contained
    assert "reference labels of sample case celiac_standard" in html_text and "reference labels of sample case" in pdf


def test_identifiers_withheld_unless_asked(demo_run):
    assert "SAMPLE-1" not in demo_run["html"] and "SAMPLE-1" not in demo_run["pdf"]
    assert "withheld" in demo_run["html"]
    image, labels = load_case(CASE)
    plan = demo_run["plan"]
    report = build_report(plan, image, _with_targets(labels, plan.target), None, include_identifiers=True,
                          no_estimate_reason="No analgesia-duration estimate: test.")
    assert "SAMPLE-1" in report.to_html() and "Sample^Case1" in report.to_html()
    assert "No analgesia-duration estimate: test." in report.to_html()


def test_figures_are_real_plots(built):
    from PIL import Image

    assert [f.title for f in built.figures] == ["Axial slice", "Reslice along needle 1", "Reslice along needle 2",
                                                "3D overview", "Relief curve"]
    for figure in built.figures:
        picture = np.asarray(Image.open(io.BytesIO(figure.png)).convert("L"), dtype=float)
        assert picture.shape[0] > 200 and picture.shape[1] > 400
        assert picture.std() > 10, figure.title  # not a blank canvas


def test_failed_rendering_writes_nothing(demo_run, built, tmp_path):
    import dataclasses

    broken = dataclasses.replace(built, figures=(Figure("bad", "not a PNG", b"not a png"),))
    with pytest.raises(Exception):
        render_pdf(broken)
    with pytest.raises(Exception):
        write_outputs(tmp_path / "out", demo_run["plan"], broken)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ultrasound_case_report_without_estimate(tmp_path):
    """An in-plane ultrasound plan has no analgesia model: the report says so and still renders."""
    case = get_case("supraclavicular_us")
    out = tmp_path / "us"
    rc = main(["plan", str(case.image_path), "--procedure", case.presets[0], "--out", str(out),
               "--labels", str(case.labels_path), "--top-k", "2"])
    assert rc in (0, 1)
    text = pdf_text(out / "report.pdf")
    assert "No analgesia-duration model exists for this procedure" in " ".join(text.split())
    assert "In-plane" in (out / "report.html").read_text(encoding="utf-8")


def test_entered_clinical_inputs_change_the_estimate(demo_run, tmp_path):
    image, labels = load_case(CASE)
    plan = demo_run["plan"]
    written, estimate, reason = write_plan_report(tmp_path / "c", plan, image, labels,
                                                  {"ecog": 3, "oral_morphine_mg_day": 300.0})
    assert reason == "" and estimate.inputs["ecog"] == 3
    cells = _Cells()
    cells.feed(written["report.html"].read_text(encoding="utf-8"))
    rows = {row[0]: row for table in cells.tables for row in table if len(row) == 3}
    assert rows["ecog"][1:] == ["3", "entered"] and rows["diabetes"][2] == "reference value (not entered)"
    assert rows["spread quadrants"][2] == "from the plan"
    default = _find_rows(demo_run["cells"].tables, "Median relief if it responds (weeks)")[0][1]
    assert _find_rows(cells.tables, "Median relief if it responds (weeks)")[0][1] != default
    with pytest.raises(Exception, match="come.*from the plan"):
        write_plan_report(tmp_path / "d", plan, image, labels, {"bilateral": False})
