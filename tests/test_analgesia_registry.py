"""Registry refit: every bad row and column is named, nothing is silently dropped, and no model
is written from a bad registry unless the user asks to drop the bad rows."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from planner.analgesia import load_model
from planner.analgesia.registry import COLUMNS, SCHEMA, read_registry
from planner.analgesia.refit import write_cohort
from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: cohort size: about 840 responders at the cohort's 70% response rate
N_COHORT = 1200


@pytest.fixture(scope="module")
def cohort_csv(tmp_path_factory) -> Path:
    path, _ = write_cohort(N_COHORT, 42, tmp_path_factory.mktemp("cohort") / "cohort.csv")
    return path


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def _bad_registry(source: Path, target: Path) -> dict[int, str]:
    """Copy ``source`` with one defect per row kind plus an extra column; returns row -> column."""
    header, rows = _rows(source)
    col = {name: i for i, name in enumerate(header)}
    responders = [i for i, r in enumerate(rows) if r[col["initial_response"]] == "1"]
    defects = {}
    a, b, c, d, e = responders[:5]
    rows[a][col["relief_weeks"]] = ""              # missing duration
    defects[a + 1] = "relief_weeks"
    rows[b][col["relief_weeks"]] = "-3.5"          # negative time
    defects[b + 1] = "relief_weeks"
    rows[c][col["relief_lost"]] = "2"              # event other than 0/1
    defects[c + 1] = "relief_lost"
    rows[d][col["tumour_site"]] = "tail"           # unknown category
    defects[d + 1] = "tumour_site"
    rows[e][col["approach"]] = "lateral"           # unknown category for the procedure
    defects[e + 1] = "approach"
    header = header + ["surgeon_name"]              # extra column
    rows = [r + ["x"] for r in rows]
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return defects


def test_schema_doc_lists_every_column():
    doc = (ROOT / "docs" / "registry_schema.md").read_text()
    for name in COLUMNS:
        assert f"`{name}`" in doc, name


def test_cohort_csv_reads_back_without_problems(cohort_csv):
    registry = read_registry(cohort_csv)
    assert registry.problems == [] and len(registry.rows) == N_COHORT
    assert set(registry.columns) == set(SCHEMA)
    r = registry.columns["initial_response"] == 1
    assert np.all(registry.columns["relief_weeks"][r] > 0)


def test_bad_registry_report_names_each_row_and_column(cohort_csv, tmp_path):
    bad = tmp_path / "bad.csv"
    defects = _bad_registry(cohort_csv, bad)
    registry = read_registry(bad)
    by_row = {p.row: p for p in registry.problems if p.row is not None}
    assert set(by_row) == set(defects)
    for row, column in defects.items():
        assert by_row[row].column == column
    reasons = {p.column: p.reason for p in registry.problems}
    assert "missing duration" in by_row[min(defects)].reason or any("missing duration" in p.reason for p in registry.problems)
    assert any("negative time" in p.reason for p in registry.problems)
    assert any("event must be 0 or 1" in p.reason for p in registry.problems)
    assert "unknown category 'tail'" in reasons["tumour_site"]
    assert "unknown category 'lateral'" in reasons["approach"]
    (extra,) = registry.column_problems
    assert extra.column == "surgeon_name" and "extra column" in extra.reason
    assert len(registry.rows) == N_COHORT - len(defects)


@pytest.mark.slow
def test_fit_refuses_bad_registry_then_drops_rows_on_request(cohort_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    defects = _bad_registry(cohort_csv, bad)
    out = tmp_path / "model"
    assert main(["outcome", "fit", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for row, column in defects.items():
        assert re.search(rf"row {row} \(line {row + 1}\), column '{column}'", err), (row, column)
    assert "'surgeon_name': extra column" in err and "no model written" in err
    assert not out.exists() or not any(out.iterdir())

    assert main(["outcome", "fit", str(bad), "--out", str(out), "--drop-bad-rows", "--folds", "3"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert sorted(report["rows_dropped"]) == sorted(defects)
    assert report["rows_used"] == N_COHORT - len(defects)
    assert "left out 5 bad row(s)" in captured.err
    cv = report["cross_validation"]
    assert 0.6 < cv["c_index_relief"] < 0.8 and cv["ici_relief_ended_max"] < 0.1
    assert 0 < cv["integrated_brier_0_26w"] < cv["integrated_brier_null"]
    model_file = Path(report["model_file"])
    assert model_file.parent == out and model_file.name.startswith("analgesia_model_registry-")
    model = load_model(model_file)
    assert not model.synthetic and "registry fit" in model.label  # edited file: no longer the synthetic cohort
    assert model.meta["training"]["rows_dropped"] == sorted(defects)
    assert "Limitations" in (out / "README.md").read_text()


def test_missing_required_column_is_fatal_even_with_drop(cohort_csv, tmp_path, capsys):
    header, rows = _rows(cohort_csv)
    i = header.index("ecog")
    path = tmp_path / "no_ecog.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header[:i] + header[i + 1:])
        writer.writerows(r[:i] + r[i + 1:] for r in rows)
    assert main(["outcome", "fit", str(path), "--out", str(tmp_path / "m"), "--drop-bad-rows"]) == 2
    err = capsys.readouterr().err
    assert "column 'ecog': required column missing" in err
    assert not (tmp_path / "m").exists()


def test_check_command_lists_problems(cohort_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    defects = _bad_registry(cohort_csv, bad)
    assert main(["outcome", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{len(defects)} bad row(s)" in out
    assert main(["outcome", "check", str(cohort_csv)]) == 0
    assert "no problems" in capsys.readouterr().out


def test_non_responder_with_duration_and_double_event_are_reported(cohort_csv, tmp_path):
    header, rows = _rows(cohort_csv)
    col = {name: i for i, name in enumerate(header)}
    non = next(i for i, r in enumerate(rows) if r[col["initial_response"]] == "0")
    resp = next(i for i, r in enumerate(rows) if r[col["initial_response"]] == "1")
    rows[non][col["relief_weeks"]] = "4"
    rows[resp][col["relief_lost"]] = "1"
    rows[resp][col["died_relieved"]] = "1"
    path = tmp_path / "odd.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    problems = {p.row: p for p in read_registry(path).problems}
    assert "non-responder" in problems[non + 1].reason
    assert "cannot both be 1" in problems[resp + 1].reason
