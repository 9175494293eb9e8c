"""Trainee practice: score a hand-drawn needle path against the planner's best.

A trainee proposes a skin entry and a target (patient LPS mm). The path is evaluated by the
same code that plans (:meth:`planner.trajectory.PathPlanner.evaluate`: hard constraints,
clearance per structure, risk integral, contact probability under placement error) and
then placed among every feasible candidate path the planner searched for that side:

- ``risk_percentile``: share (%) of the feasible candidates whose risk integral is at least
  the trainee's (100 = as safe as the safest candidate);
- ``score_percentile``: the same for the planner's ranking score (risk, length and angle
  weighted as in the preset; what "best" means in a plan).

An infeasible path gets no percentile: it is ranked below every feasible one. The feedback
is plain sentences built from these numbers. Research and education software.

Example:
    >>> from planner.samples import load_case                           # doctest: +SKIP
    >>> image, labels = load_case("celiac_standard")                    # doctest: +SKIP
    >>> session = PracticeSession(image, labels, "celiac_posterior_retrocrural")  # doctest: +SKIP
    >>> print(session.score((60, 110, -100), (20, 10, -70)).text())    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from planner.errors import PlanError
from planner.volume import Volume

#: organs at risk farther than this from both paths are not listed structure by structure
LISTED_CLEARANCE_MM = 20.0


@dataclass(frozen=True)
class StructureClearance:
    """Clearance of one organ at risk for the trainee's path and the planner's best."""

    name: str
    trainee_mm: float
    best_mm: float | None
    margin_mm: float
    ok: bool  # trainee's path keeps the hard margin


@dataclass(frozen=True)
class PracticeScore:
    """The result of scoring one trainee path (see module docstring)."""

    procedure: str
    side: str
    trainee: Any  # planner.trajectory.PathMetrics
    best: Any | None  # planner.trajectory.PathMetrics of the planner's best path on that side
    clearances: tuple[StructureClearance, ...]
    n_candidates: int
    n_feasible: int
    risk_percentile: float | None
    score_percentile: float | None
    trainee_score: float
    best_score: float | None
    feedback: tuple[str, ...]

    @property
    def feasible(self) -> bool:
        return bool(self.trainee.feasible)

    def to_dict(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure, "side": self.side, "feasible": self.feasible,
            "reasons": list(self.trainee.reasons),
            "trainee": self.trainee.to_dict(), "best": None if self.best is None else self.best.to_dict(),
            "clearances": [c.__dict__ for c in self.clearances],
            "candidates": self.n_candidates, "feasible_candidates": self.n_feasible,
            "risk_percentile": self.risk_percentile, "score_percentile": self.score_percentile,
            "trainee_score": round(self.trainee_score, 4),
            "best_score": None if self.best_score is None else round(self.best_score, 4),
            "feedback": list(self.feedback),
        }

    def text(self) -> str:
        """A few lines for a terminal or a widget."""
        t = self.trainee
        lines = [f"trainee path ({self.side}): {'FEASIBLE' if self.feasible else 'NOT FEASIBLE'}, "
                 f"{t.length_mm:.0f} mm, risk {t.risk:.3f}, P(organ contact) {_p(t.p_oar_contact)}"]
        if self.risk_percentile is not None:
            lines.append(f"risk percentile {self.risk_percentile:.0f} and planner-score percentile "
                         f"{self.score_percentile:.0f} among {self.n_feasible} feasible candidate paths "
                         f"(100 = best)")
        if self.best is not None:
            b = self.best
            lines.append(f"planner's best ({self.side}): {b.length_mm:.0f} mm, risk {b.risk:.3f}, "
                         f"P(organ contact) {_p(b.p_oar_contact)}")
        lines.append("clearance (trainee / best / margin, mm):")
        for c in self.clearances:
            best = "-" if c.best_mm is None else f"{c.best_mm:.1f}"
            lines.append(f"  {c.name:<24} {c.trainee_mm:6.1f} / {best:>6} / {c.margin_mm:g}"
                         + ("" if c.ok else "  <- within the margin"))
        lines += [f"- {f}" for f in self.feedback]
        return "\n".join(lines)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _percentile(values: np.ndarray, value: float) -> float:
    """Share (%) of ``values`` that are at least ``value`` (ties count in the trainee's favour)."""
    if values.size == 0:
        return float("nan")
    return float(100.0 * np.mean(values >= value - 1e-6))


class PracticeSession:
    """One case and preset: the planner, its candidate paths and its best path per side.

    Building it runs the search once (a few seconds on a 3 mm CT); :meth:`score` is then a
    single path evaluation, cheap enough for a button in a viewer.

    Args:
        image: the case image.
        labels: label map in the vocabulary on the image grid (targets are derived if absent).
        procedure: preset name.
        seed: seeds target sampling (as in :func:`planner.plan.build_plan`).
    """

    def __init__(self, image: Volume, labels: Volume, procedure: str, seed: int = 0, n_targets: int = 24) -> None:
        from planner.distance import CaseGeometry, check_same_grid
        from planner.plan import _with_targets
        from planner.presets import get_preset
        from planner.trajectory import PathPlanner, single_frame, target_frame

        self.preset = get_preset(procedure)
        check_same_grid(image, labels)
        labels = _with_targets(labels, self.preset.target)
        if self.preset.in_plane and labels.shape[0] > 1:
            frame = target_frame(labels, self.preset.target)
            image, labels = single_frame(image, frame), single_frame(labels, frame)
        self.image, self.labels = image, labels
        self.planner = PathPlanner(CaseGeometry(labels=labels, image=image), self.preset, seed=seed)
        self._search(n_targets)

    @classmethod
    def from_planner(cls, planner: Any, n_targets: int = 24) -> "PracticeSession":
        """A session on an existing :class:`planner.trajectory.PathPlanner` (a viewer's), without
        recomputing its distance maps: only the candidate search runs (well under a second)."""
        self = cls.__new__(cls)
        self.preset, self.planner = planner.preset, planner
        self.labels, self.image = planner.geometry.labels, planner.geometry.image
        self._search(n_targets)
        return self

    def _search(self, n_targets: int) -> None:
        from planner.trajectory import sides_for

        self._candidates: dict[str, Any] = {}
        self._best: dict[str, Any] = {}
        for side in sides_for(self.preset):
            paths, cands = self.planner.best_paths(side, k=1, n_targets=n_targets)
            self._candidates[side] = cands
            self._best[side] = paths[0] if paths and paths[0].feasible else None

    def side_for(self, entry_lps: Sequence[float]) -> str:
        """The planner side a trainee entry belongs to."""
        sides = tuple(self._candidates)
        if len(sides) == 1:
            return sides[0]
        return self.planner.side_of(entry_lps)

    def best(self, side: str) -> Any | None:
        """The planner's best feasible path on ``side`` (``None`` when nothing is feasible)."""
        return self._best.get(side)

    def score(self, entry_lps: Sequence[float], target_lps: Sequence[float]) -> PracticeScore:
        """Score the trainee's straight path from ``entry_lps`` to ``target_lps`` (LPS mm)."""
        entry = np.asarray(entry_lps, dtype=float).reshape(-1)
        target = np.asarray(target_lps, dtype=float).reshape(-1)
        if entry.size != 3 or target.size != 3 or not (np.isfinite(entry).all() and np.isfinite(target).all()):
            raise PlanError(f"entry and target must be 3 finite LPS mm values each, got {entry_lps!r} and {target_lps!r}")
        if np.linalg.norm(target - entry) < 1.0:
            raise PlanError("entry and target coincide: draw a path at least 1 mm long")
        side = self.side_for(entry)
        trainee = self.planner.evaluate(entry, target)
        best = self.best(side)
        cands = self._candidates[side]
        rows = np.nonzero(cands.feasible)[0]
        trainee_score = self.planner.path_score(trainee)
        best_score = None if best is None else self.planner.path_score(best)
        risk_pct = score_pct = None
        if trainee.feasible and rows.size:
            risk_pct = _percentile(cands.risk[rows].astype(float), trainee.risk)
            score_pct = _percentile(self.planner.score(cands, rows).astype(float), trainee_score)
        clearances = self._clearances(trainee, best)
        return PracticeScore(
            procedure=self.preset.name, side=side, trainee=trainee, best=best, clearances=clearances,
            n_candidates=cands.n_paths, n_feasible=int(rows.size), risk_percentile=risk_pct,
            score_percentile=score_pct, trainee_score=trainee_score, best_score=best_score,
            feedback=feedback(trainee, best, risk_pct, score_pct, clearances, int(rows.size)))

    def _clearances(self, trainee: Any, best: Any | None) -> tuple[StructureClearance, ...]:
        out = []
        for name in self.planner.forbidden:
            mine = float(trainee.min_clearance_mm[name])
            theirs = None if best is None else float(best.min_clearance_mm[name])
            margin = float(self.planner.margins[name])
            ok = mine >= margin
            if ok and margin <= 0:  # bone and discs may be touched: listed only when entered too deep
                continue
            if not ok or mine < LISTED_CLEARANCE_MM or (theirs is not None and theirs < LISTED_CLEARANCE_MM):
                out.append(StructureClearance(name=name, trainee_mm=round(mine, 1),
                                              best_mm=None if theirs is None else round(theirs, 1),
                                              margin_mm=margin, ok=ok))
        return tuple(sorted(out, key=lambda c: (c.ok, c.trainee_mm - c.margin_mm)))


def feedback(trainee: Any, best: Any | None, risk_pct: float | None, score_pct: float | None,
             clearances: Sequence[StructureClearance], n_feasible: int) -> tuple[str, ...]:
    """Plain-language feedback from the scored numbers (nothing new is computed here)."""
    lines: list[str] = []
    if not trainee.feasible:
        lines.append("This path is not acceptable: " + "; ".join(trainee.reasons) + ".")
        crossed = [c.name for c in clearances if not c.ok and c.trainee_mm < 0
                   and c.margin_mm > 0]
        if crossed:
            lines.append(f"The needle would pass through {', '.join(crossed)}: choose an entry or angle that "
                         "goes around it.")
        elif any(not c.ok for c in clearances):
            tight = [c.name for c in clearances if not c.ok]
            lines.append(f"Move the path away from {', '.join(tight)} to keep its safety margin.")
    else:
        if score_pct is not None and score_pct >= 99.0:
            lines.append(f"Excellent: the path ranks with the planner's best among {n_feasible} feasible paths.")
        elif score_pct is not None and score_pct >= 75.0:
            lines.append(f"Good: the path is feasible and better than most ({score_pct:.0f}th percentile) of the "
                         f"{n_feasible} feasible paths.")
        else:
            lines.append(f"The path is feasible but many of the {n_feasible} feasible paths are better "
                         f"({'-' if score_pct is None else f'{score_pct:.0f}th'} percentile).")
        if risk_pct is not None and risk_pct < 50.0:
            lines.append("It runs closer to organs at risk than most alternatives: look for more clearance.")
        if trainee.nearest_structure:
            near = trainee.nearest_structure
            lines.append(f"Closest organ at risk: {near} at {trainee.min_clearance_mm[near]:.1f} mm.")
    if best is not None:
        dl = trainee.length_mm - best.length_mm
        if abs(dl) >= 10.0:
            lines.append(f"The path is {abs(dl):.0f} mm {'longer' if dl > 0 else 'shorter'} than the planner's best "
                         f"({best.length_mm:.0f} mm).")
        if trainee.gantry_angle_deg is not None and best.gantry_angle_deg is not None:
            da = trainee.gantry_angle_deg - best.gantry_angle_deg
            if abs(da) >= 10.0:
                lines.append(f"Its cranio-caudal (gantry) angle is {abs(trainee.gantry_angle_deg):.0f} deg against "
                             f"{abs(best.gantry_angle_deg):.0f} deg for the planner's best.")
        if (trainee.p_oar_contact is not None and best.p_oar_contact is not None
                and trainee.p_oar_contact > best.p_oar_contact + 0.02):
            lines.append(f"Under the placement-error model it touches an organ at risk with probability "
                         f"{trainee.p_oar_contact:.2f} (planner's best {best.p_oar_contact:.2f}).")
    elif n_feasible == 0:
        lines.append("The planner found no feasible path on this side either.")
    return tuple(lines)
