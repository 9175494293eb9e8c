"""Trainee practice: the planner's best ranks at the top, a path through the kidney is infeasible."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.cli import main
from planner.errors import PlanError
from planner.practice import PracticeSession
from planner.samples import case_names, load_case

CASE = "celiac_standard"
PRESET = "celiac_posterior_retrocrural"

if CASE not in case_names():
    pytest.skip(f"sample case {CASE} is not bundled (python -m segmentation.make_samples)", allow_module_level=True)


@pytest.fixture(scope="module")
def session():
    image, labels = load_case(CASE)
    return PracticeSession(image, labels, PRESET)


def kidney_path(session: PracticeSession) -> tuple[np.ndarray, np.ndarray]:
    """From a skin point behind the left kidney through its centre to the planner's left target."""
    labels = session.labels
    centre = labels.index_to_lps(np.argwhere(labels.array == label_of("kidney_left")).mean(axis=0))
    target = np.asarray(session.best("left").target_lps_mm)
    direction = (centre - target) / np.linalg.norm(centre - target)
    skin = session.planner.skin.lps
    along = (skin - target) @ direction
    off_ray = np.linalg.norm(skin - target - along[:, None] * direction, axis=1)
    candidates = np.where(along > np.linalg.norm(centre - target), off_ray, np.inf)
    return skin[int(np.argmin(candidates))], target


@pytest.mark.parametrize("side", ["left", "right"])
def test_planner_best_path_is_at_the_top_percentile(session, side):
    best = session.best(side)
    score = session.score(best.entry_lps_mm, best.target_lps_mm)
    assert score.feasible and score.side == side
    assert score.score_percentile == pytest.approx(100.0)  # "best" is the planner's ranking score
    assert score.risk_percentile >= 50.0  # the ranking trades a little risk for length and angle
    assert score.n_feasible > 10 and score.n_candidates > score.n_feasible
    assert score.feedback[0].startswith("Excellent")


def test_path_through_the_kidney_is_infeasible(session):
    entry, target = kidney_path(session)
    score = session.score(entry, target)
    assert not score.feasible
    assert "crosses kidney_left" in score.trainee.reasons
    assert score.risk_percentile is None and score.score_percentile is None  # ranked below every feasible path
    kidney = next(c for c in score.clearances if c.name == "kidney_left")
    assert kidney.trainee_mm < 0 and not kidney.ok and kidney.best_mm >= kidney.margin_mm
    assert score.clearances[0].ok is False  # violations are listed first
    assert "not acceptable" in score.feedback[0] and any("kidney_left" in f for f in score.feedback)
    assert score.trainee.p_oar_contact > score.best.p_oar_contact


def test_slightly_worse_path_ranks_lower(session):
    best = session.best("left")
    entry = np.asarray(best.entry_lps_mm) + np.array([8.0, 0.0, 0.0])
    score = session.score(entry, best.target_lps_mm)
    if score.feasible:
        assert score.score_percentile < 100.0
    else:
        assert score.trainee.reasons


def test_bad_input_is_refused(session):
    with pytest.raises(PlanError, match="coincide"):
        session.score((1.0, 2.0, 3.0), (1.0, 2.0, 3.0))
    with pytest.raises(PlanError, match="3 finite"):
        session.score((1.0, 2.0), (1.0, 2.0, 3.0))


def test_cli_practice_json(session, capsys):
    entry, target = kidney_path(session)
    fmt = lambda p: ",".join(f"{v:.3f}" for v in p)  # noqa: E731
    rc = main(["practice", CASE, f"--entry={fmt(entry)}", f"--target={fmt(target)}", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["feasible"] is False and "crosses kidney_left" in result["reasons"]
    assert result["best"]["feasible"] is True and result["feedback"]
    assert main(["practice", "no_such_case", "--entry", "0,0,0", "--target", "1,1,1"]) == 2
    assert "unknown sample case" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: usage error
        main(["practice", CASE, "--entry", "0,0", "--target", "1,1,1"])
    assert "expected three values X,Y,Z" in capsys.readouterr().err


def test_cli_practice_on_an_image_path(session, capsys):
    from planner.samples import get_case

    case = get_case(CASE)
    best = session.best("right")
    fmt = lambda p: ",".join(f"{v:.3f}" for v in p)  # noqa: E731
    args = ["practice", str(case.image_path), f"--entry={fmt(best.entry_lps_mm)}",  # x < 0 on the right: use "="
            f"--target={fmt(best.target_lps_mm)}"]
    assert main(args) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(args + ["--labels", str(case.labels_path), "--procedure", PRESET]) == 0
    out = capsys.readouterr().out
    assert "trainee path (right): FEASIBLE" in out and "planner-score percentile 100" in out


def test_session_on_an_existing_planner_matches(session):
    """A viewer's PathPlanner is reused: same candidates, same best path, same score."""
    again = PracticeSession.from_planner(session.planner)
    best = session.best("left")
    assert again.best("left").entry_lps_mm == best.entry_lps_mm
    a, b = session.score(best.entry_lps_mm, best.target_lps_mm), again.score(best.entry_lps_mm, best.target_lps_mm)
    assert a.score_percentile == b.score_percentile and a.n_feasible == b.n_feasible
