"""Seeded synthetic cohort for the analgesia-duration model.

Every number comes from ``planner/data/analgesia_cohort.json`` (value, source, assumption).
Outcomes: initial response (logistic, capped for poor spread); among responders, a Weibull
proportional-hazards time to loss of relief and a Weibull time to death (competing event),
both multiplied by one gamma frailty per patient; administrative censoring. The rows use the
registry schema (:mod:`planner.analgesia.registry`), so a cohort can be fit like a registry.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from planner.analgesia.features import APPROACHES, FEATURE_NAMES, PROCEDURES, encode_columns
from planner.errors import OutcomeModelError

PARAMETERS_FILE = Path(__file__).resolve().parent.parent / "data" / "analgesia_cohort.json"


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OutcomeModelError(f"cannot read cohort parameters {path}: {exc}") from exc


def load_parameters(path: Path | str = PARAMETERS_FILE) -> dict[str, Any]:
    """The generator parameters (a fresh copy; see the JSON file for sources)."""
    return json.loads(json.dumps(_load(str(path))))


def parameter_leaves(params: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every ``{"value", "source", "assumption"}`` entry, keyed by its dotted path."""
    leaves: dict[str, dict[str, Any]] = {}
    for key, item in params.items():
        if isinstance(item, dict) and "value" in item:
            leaves[prefix + key] = item
        elif isinstance(item, dict):
            leaves.update(parameter_leaves(item, f"{prefix}{key}."))
    return leaves


def _v(entry: dict[str, Any]) -> Any:
    return entry["value"]


@dataclass(frozen=True)
class TrueModel:
    """The generator's hazards in model form: coefficients per feature (order FEATURE_NAMES)."""

    response_intercept: float
    response_coef: np.ndarray
    response_cap_le2: float
    relief_shape: float
    relief_log_scale: float  # conditional cumulative hazard H(t) = Z exp(log_scale + x.b) t**shape
    relief_coef: np.ndarray
    death_shape: float
    death_log_scale: float
    death_coef: np.ndarray
    frailty_variance: float
    admin_censor_weeks: float

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> "TrueModel":
        def coefs(table: dict[str, Any]) -> np.ndarray:
            unknown = set(table) - set(FEATURE_NAMES)
            if unknown:
                raise OutcomeModelError(f"cohort parameters name unknown features {sorted(unknown)}")
            return np.array([math.log(_v(table[n])) if n in table else 0.0 for n in FEATURE_NAMES])

        theta = float(_v(params["frailty"]["variance"]))
        # baseline so that the *marginal* median (over the frailty) at reference is as given
        h_median = (2.0 ** theta - 1.0) / theta if theta > 0 else math.log(2.0)

        def log_scale(block: dict[str, Any]) -> float:
            return math.log(h_median) - _v(block["shape"]) * math.log(_v(block["median_weeks_at_reference"]))

        p_ref = float(_v(params["response"]["reference_probability"]))
        return cls(
            response_intercept=math.log(p_ref / (1.0 - p_ref)),
            response_coef=coefs(params["response"]["odds_ratios"]),
            response_cap_le2=float(_v(params["response"]["spread_le2_cap"])),
            relief_shape=float(_v(params["relief_loss"]["shape"])),
            relief_log_scale=log_scale(params["relief_loss"]),
            relief_coef=coefs(params["relief_loss"]["hazard_ratios"]),
            death_shape=float(_v(params["death"]["shape"])),
            death_log_scale=log_scale(params["death"]),
            death_coef=coefs(params["death"]["hazard_ratios"]),
            frailty_variance=theta,
            admin_censor_weeks=float(_v(params["censoring"]["administrative_weeks"])),
        )

    def relieved_survival(self, x: np.ndarray, times: np.ndarray) -> np.ndarray:
        """True P(still relieved and alive at t | responder, x), frailty integrated out: [n, len(times)]."""
        t = np.asarray(times, dtype=float)[None, :]
        h = (np.exp(self.relief_log_scale + x @ self.relief_coef)[:, None] * t ** self.relief_shape
             + np.exp(self.death_log_scale + x @ self.death_coef)[:, None] * t ** self.death_shape)
        theta = self.frailty_variance
        return np.exp(-h) if theta == 0 else (1.0 + theta * h) ** (-1.0 / theta)

    def response_probability(self, x: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(self.response_intercept + x @ self.response_coef)))
        le2 = x[:, FEATURE_NAMES.index("spread_le2")] > 0
        return np.where(le2, np.minimum(p, self.response_cap_le2), p)


@dataclass(frozen=True)
class Cohort:
    """A generated cohort: registry-schema columns plus the true linear predictors."""

    columns: dict[str, np.ndarray]
    features: np.ndarray
    true_response_probability: np.ndarray
    true_relief_lp: np.ndarray  # log relative hazard of losing relief (oracle risk score)
    true_death_lp: np.ndarray
    frailty: np.ndarray
    seed: int
    parameters_version: str

    @property
    def n(self) -> int:
        return len(self.features)


def _categorical(rng: np.random.Generator, table: dict[str, float], size: int) -> np.ndarray:
    names = list(table)
    p = np.array([table[k] for k in names], dtype=float)
    return np.array(names, dtype=object)[rng.choice(len(names), size=size, p=p / p.sum())]


def generate(n: int, seed: int, params: dict[str, Any] | None = None) -> Cohort:
    """Draw ``n`` synthetic patients with a seeded generator (same seed, same cohort)."""
    if n < 1:
        raise OutcomeModelError(f"cohort size must be at least 1, got {n}")
    params = params or load_parameters()
    cov = params["covariates"]
    rng = np.random.default_rng(seed)
    procedure = _categorical(rng, _v(cov["procedure"]), n)
    approach = np.empty(n, dtype=object)
    site = np.empty(n, dtype=object)
    encasement = np.zeros(n)
    for name in PROCEDURES:
        idx = np.flatnonzero(procedure == name)
        approach[idx] = _categorical(rng, _v(cov["approach"])[name], idx.size)
        site[idx] = _categorical(rng, _v(cov["tumour_site"])[name], idx.size)
        encasement[idx] = rng.random(idx.size) < _v(cov["celiac_axis_encasement"])[name]
    spread_tables = _v(cov["spread_quadrants"])
    spread = np.empty(n)
    for name in PROCEDURES:
        for key in APPROACHES[name]:
            idx = np.flatnonzero((procedure == name) & (approach == key))
            table = spread_tables[name].get(key, spread_tables[name]["default"])
            spread[idx] = rng.choice(5, size=idx.size, p=np.asarray(table) / np.sum(table))
    ome = _v(cov["oral_morphine_mg_day"])
    pain = _v(cov["baseline_pain"])
    columns: dict[str, np.ndarray] = {
        "procedure": procedure,
        "approach": approach,
        "bilateral": (rng.random(n) < _v(cov["bilateral"])).astype(int),
        "tumour_site": site,
        "distant_metastases": (rng.random(n) < _v(cov["distant_metastases"])).astype(int),
        "celiac_axis_encasement": encasement.astype(int),
        "spread_quadrants": spread.astype(int),
        "oral_morphine_mg_day": np.round(ome["median"] * np.exp(ome["log_sd"] * rng.standard_normal(n)), 1),
        "ecog": rng.choice(4, size=n, p=np.asarray(_v(cov["ecog"])) / np.sum(_v(cov["ecog"]))),
        "diabetes": (rng.random(n) < _v(cov["diabetes"])).astype(int),
        "prior_upper_abdominal_surgery": (rng.random(n) < _v(cov["prior_upper_abdominal_surgery"])).astype(int),
        "early_procedure": (rng.random(n) < _v(cov["early_procedure"])).astype(int),
        "repeat_procedure": (rng.random(n) < _v(cov["repeat_procedure"])).astype(int),
        "baseline_pain": np.clip(np.round(pain["mean"] + pain["sd"] * rng.standard_normal(n)),
                                 pain["min"], pain["max"]),
    }
    x = encode_columns(columns)
    truth = TrueModel.from_parameters(params)
    p_response = truth.response_probability(x)
    response = rng.random(n) < p_response
    theta = truth.frailty_variance
    frailty = rng.gamma(1.0 / theta, theta, size=n) if theta > 0 else np.ones(n)
    relief_lp = x @ truth.relief_coef
    death_lp = x @ truth.death_coef
    t_loss = (rng.exponential(size=n) / (frailty * np.exp(truth.relief_log_scale + relief_lp))) ** (1 / truth.relief_shape)
    t_death = (rng.exponential(size=n) / (frailty * np.exp(truth.death_log_scale + death_lp))) ** (1 / truth.death_shape)
    end = np.minimum(np.minimum(t_loss, t_death), truth.admin_censor_weeks)
    columns["initial_response"] = response.astype(int)
    columns["relief_weeks"] = np.where(response, np.round(np.maximum(end, 0.01), 2), np.nan)
    columns["relief_lost"] = np.where(response, (t_loss <= t_death) & (t_loss < truth.admin_censor_weeks), 0).astype(int)
    columns["died_relieved"] = np.where(response, (t_death < t_loss) & (t_death < truth.admin_censor_weeks), 0).astype(int)
    return Cohort(columns=columns, features=x, true_response_probability=p_response,
                  true_relief_lp=relief_lp, true_death_lp=death_lp, frailty=frailty, seed=seed,
                  parameters_version=str(params.get("version", "?")))
