"""Fit a model file (with its card) from a registry CSV, and export synthetic cohorts as CSV.

A cohort exported by :func:`write_cohort` gets a provenance file next to it
(``<csv>.provenance.json``: generator version, parameter-file hash, seed, CSV hash). A fit
whose CSV matches its provenance is labelled synthetic, and additionally checked on a
held-out synthetic cohort against the generator's own (oracle) hazards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.analgesia import cohort as cohort_mod
from planner.analgesia.features import FEATURE_NAMES
from planner.analgesia.model import AnalgesiaModel, file_sha256, fit_model
from planner.analgesia.registry import Problem, read_registry, write_registry
from planner.errors import OutcomeModelError
from planner.volume import atomic_output

HELD_OUT_SEED_OFFSET = 1_000_003
HELD_OUT_N = 20_000


def provenance_path(csv_path: Path | str) -> Path:
    return Path(f"{csv_path}.provenance.json")


def write_cohort(n: int, seed: int, out: Path | str) -> tuple[Path, Path]:
    """Generate a seeded synthetic cohort and write it (registry schema) plus its provenance."""
    params = cohort_mod.load_parameters()
    data = cohort_mod.generate(n, seed, params)
    csv_path = write_registry(data.columns, out)
    provenance = {
        "kind": "synthetic", "generator": "planner/data/analgesia_cohort.json",
        "parameters_version": params.get("version"),
        "parameters_sha256": file_sha256(cohort_mod.PARAMETERS_FILE),
        "seed": seed, "n": n, "csv_sha256": file_sha256(csv_path),
    }
    prov = provenance_path(csv_path)
    with atomic_output(prov) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1) + "\n")
    return csv_path, prov


def _training_info(csv_path: Path) -> dict[str, Any]:
    prov = provenance_path(csv_path)
    csv_sha = file_sha256(csv_path)
    if prov.is_file():
        try:
            info = json.loads(prov.read_text())
        except json.JSONDecodeError:
            info = {}
        if info.get("kind") == "synthetic" and info.get("csv_sha256") == csv_sha:
            info["source"] = f"{info.pop('generator', '?')} (seed {info.get('seed')})"
            info["label"] = "synthetic cohort"
            info["follow_up_weeks"] = float(cohort_mod.load_parameters()["censoring"]["administrative_weeks"]["value"])
            return info
    return {"kind": "registry", "label": f"registry fit ({csv_path.name})", "source": csv_path.name,
            "csv_sha256": csv_sha}


@dataclass
class RefitResult:
    problems: list[Problem]
    dropped_rows: list[int]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    model_path: Path | None = None
    card_path: Path | None = None
    model: AnalgesiaModel | None = None


def held_out_metrics(model: AnalgesiaModel, seed: int, n: int = HELD_OUT_N) -> dict[str, float]:
    """Model figures on a fresh synthetic cohort next to the generator's oracle figures."""
    from planner.analgesia.metrics import ICI_TIMES, auc, concordance, evaluate, ici_survival

    params = cohort_mod.load_parameters()
    data = cohort_mod.generate(n, seed, params)
    figures = evaluate(model, data.columns, data.features)
    cols = data.columns
    r = cols["initial_response"] == 1
    oracle_c = concordance(cols["relief_weeks"][r], cols["relief_lost"][r], data.true_relief_lp[r])
    truth = cohort_mod.TrueModel.from_parameters(params)
    true_surv = truth.relieved_survival(data.features[r], np.array(ICI_TIMES))
    ended = np.clip(cols["relief_lost"][r] + cols["died_relieved"][r], 0, 1)
    oracle_ici = max(ici_survival(cols["relief_weeks"][r], ended, 1 - true_surv[:, j], t0)
                     for j, t0 in enumerate(ICI_TIMES))
    return {"seed": float(seed), **figures, "oracle_c_index_relief": oracle_c,
            "c_index_gap": oracle_c - figures["c_index_relief"],
            "oracle_auc_response": auc(cols["initial_response"], data.true_response_probability),
            "oracle_ici_relief_ended_max": oracle_ici}


def true_ratios() -> dict[str, dict[str, float]]:
    """The generator's odds/hazard ratios per model part (for the card), calibrated ones included."""
    truth = cohort_mod.TrueModel.from_parameters(cohort_mod.load_parameters())
    return {part: {name: float(np.exp(b)) for name, b in zip(FEATURE_NAMES, coef)}
            for part, coef in (("response", truth.response_coef), ("relief", truth.relief_coef),
                               ("death", truth.death_coef))}


def refit(csv_path: Path | str, out_dir: Path | str, *, drop_bad_rows: bool = False, folds: int = 5,
          seed: int = 0, version: str | None = None) -> RefitResult:
    """Validate, cross-validate, fit and write ``analgesia_model_<version>.json`` + ``README.md``.

    Raises :class:`OutcomeModelError` (after the report is available in the exception's
    ``result``) when problems block the fit: missing or duplicate columns always, bad rows or
    extra columns unless ``drop_bad_rows``.
    """
    from planner.analgesia.card import render
    from planner.analgesia.metrics import cross_validate

    csv_path = Path(csv_path)
    registry = read_registry(csv_path)
    result = RefitResult(problems=registry.problems, dropped_rows=registry.bad_rows)
    fatal = [p for p in registry.column_problems if "extra column" not in p.reason]
    if fatal:
        raise _blocked(result, f"{len(fatal)} column problem(s) in {csv_path}; no model written")
    if registry.problems and not drop_bad_rows:
        raise _blocked(result, f"{len(registry.problems)} problem(s) in {len(registry.bad_rows)} row(s) of "
                               f"{csv_path}; no model written (fix them, or pass --drop-bad-rows to leave "
                               "those rows out and ignore extra columns)")
    training = _training_info(csv_path)
    if registry.bad_rows:
        training["rows_dropped"] = registry.bad_rows if len(registry.bad_rows) <= 50 else \
            f"{len(registry.bad_rows)} rows (see the fit report)"
    version = version or ("synthetic-" if training["kind"] == "synthetic" else "registry-") + \
        training.get("csv_sha256", "x")[:8]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", version):
        raise OutcomeModelError(f"model version {version!r} may only hold letters, digits, '.', '_' and '-'")
    columns = registry.columns
    try:
        result.metrics["cross_validation"] = cross_validate(columns, folds=folds, seed=seed)
    except ValueError as exc:
        raise OutcomeModelError(f"cannot cross-validate {csv_path}: {exc}") from exc
    model = fit_model(columns, training=training, model_version=version)
    if training["kind"] == "synthetic":
        result.metrics["held_out"] = held_out_metrics(model, int(training.get("seed", 0)) + HELD_OUT_SEED_OFFSET)
    file_name = f"analgesia_model_{version}.json"
    model.meta["file_name"] = file_name
    model.meta["metrics"] = {k: {m: float(v) for m, v in d.items()} for k, d in result.metrics.items()}
    out_dir = Path(out_dir)
    result.model_path = model.save(out_dir / file_name)
    generator = cohort_mod.load_parameters() if training["kind"] == "synthetic" else None
    card = render(model, generator=generator, truth=true_ratios() if generator else None)
    result.card_path = out_dir / "README.md"
    with atomic_output(result.card_path) as tmp:
        tmp.write_text(card)
    result.model = model
    return result


class RefitBlocked(OutcomeModelError):
    """The registry has problems that stop the fit; ``result.problems`` lists them all."""

    def __init__(self, message: str, result: RefitResult) -> None:
        super().__init__(message)
        self.result = result


def _blocked(result: RefitResult, message: str) -> RefitBlocked:
    return RefitBlocked(message, result)


def summary(figures: dict[str, float]) -> dict[str, float]:
    """Rounded copy of a metrics dict for printing."""
    return {k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v) for k, v in figures.items()}
