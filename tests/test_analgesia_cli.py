"""``plexplan outcome predict|cohort|schema``: JSON out, inputs from flags, a JSON file or a plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.analgesia import ClinicalInputs, predict
from planner.cli import main


def _run(capsys, *argv: str) -> dict:
    assert main(["outcome", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_from_flags_matches_the_python_api(capsys):
    out = _run(capsys, "predict", "--spread-quadrants", "3", "--ecog", "2", "--no-bilateral",
               "--oral-morphine-mg-day", "200", "--distant-metastases")
    expected = predict(ClinicalInputs(spread_quadrants=3, ecog=2, bilateral=False, oral_morphine_mg_day=200,
                                      distant_metastases=True)).to_dict()
    assert out == json.loads(json.dumps(expected))
    assert "synthetic cohort" in out["label"]
    assert out["inputs"]["bilateral"] is False


def test_predict_from_json_file_and_plan(tmp_path, capsys):
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"ecog": 3, "tumour_site": "body_tail", "repeat_procedure": True}))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"procedure": "celiac_anterior", "approach": "anterior", "bilateral": False,
                                "celiac_axis_encased": False, "spread": {"quadrants": 4, "rule": "r"},
                                "trajectories": []}))
    out_file = tmp_path / "estimate.json"
    out = _run(capsys, "predict", "--json", str(inputs), "--plan", str(plan), "--out", str(out_file))
    assert out["inputs"]["approach"] == "anterior" and out["inputs"]["ecog"] == 3
    assert out["inputs"]["tumour_site"] == "body_tail"
    assert json.loads(out_file.read_text()) == out


@pytest.mark.parametrize("argv, message", [
    (["--ecog", "2", "--json", "{inputs}"], "given both"),
    (["--json", "{broken}"], "not valid JSON"),
    (["--plan", "{missing}"], "cannot read plan"),
    (["--model", "{missing}"], "not found"),
    (["--procedure", "superior_hypogastric_neurolysis"], "approach 'posterior_retrocrural' does not exist"),
])
def test_predict_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "inputs.json").write_text(json.dumps({"ecog": 1}))
    (tmp_path / "broken.json").write_text("{")
    names = {"inputs": tmp_path / "inputs.json", "broken": tmp_path / "broken.json",
             "missing": tmp_path / "missing.json"}
    argv = [a.format(**names) for a in argv]
    assert main(["outcome", "predict", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cohort_export_and_schema(tmp_path, capsys):
    target = tmp_path / "c.csv"
    assert main(["outcome", "cohort", "--n", "50", "--seed", "3", "--out", str(target)]) == 0
    assert target.is_file() and Path(f"{target}.provenance.json").is_file()
    provenance = json.loads(Path(f"{target}.provenance.json").read_text())
    assert provenance["seed"] == 3 and provenance["n"] == 50 and provenance["kind"] == "synthetic"
    assert len(target.read_text().splitlines()) == 51
    capsys.readouterr()
    assert main(["outcome", "schema"]) == 0
    assert "relief_weeks" in capsys.readouterr().out
