"""Seeded synthetic cohort for the analgesia-duration model.

Every number comes from ``planner/data/analgesia_cohort.json`` (value, source, assumption).
Outcomes: initial response (logistic with the published odds ratios shrunk by one fitted factor,
capped for poor spread); among responders, a Weibull
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

        cap = float(_v(params["response"]["spread_le2_cap"]))
        intercept, response_coef = calibrate_response(params, coefs(params["response"]["odds_ratios"]), cap)
        return cls(
            response_intercept=intercept,
            response_coef=response_coef,
            response_cap_le2=cap,
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
        return _capped_response(self.response_intercept, x @ self.response_coef, x, self.response_cap_le2)


def _capped_response(intercept: float, lp: np.ndarray, x: np.ndarray, cap: float) -> np.ndarray:
    """Logistic response probability, at most ``cap`` with 2 or fewer spread quadrants (De Cicco 2001)."""
    p = 1.0 / (1.0 + np.exp(-(intercept + lp)))
    le2 = x[:, FEATURE_NAMES.index("spread_le2")] > 0
    return np.where(le2, np.minimum(p, cap), p)


def calibrate_response(params: dict[str, Any], coef: np.ndarray, cap: float) -> tuple[float, np.ndarray]:
    """Logistic response model ``logit p = a + s * x.beta`` fitted to the published rates.

    ``beta`` are the published log odds ratios (``response.odds_ratios``). Multiplied as if
    independent they make the most favourable (reference) patient respond almost always, so the
    intercept ``a`` and one common shrinkage factor ``s`` of every published log odds ratio are
    solved jointly such that the reference patient responds at ``response.reference_rate``
    (Rykowski 2000, head tumours) and the cohort's overall mean capped response probability is
    ``response.target_overall_rate`` (whole series: McGreevy 2013, Eisenberg 1995). The
    coefficient of each feature in ``response.subgroup_rates`` is solved (not shrunk) such that
    patients with that feature respond at the given rate (Plancarte 1997). The coefficient of
    2-or-fewer-quadrant spread follows from the cap (``response.spread_le2_cap``): the reference
    patient with such spread responds with probability equal to the cap. Solved on a seeded sample
    of this file's covariate distribution (``response.intercept_calibration``), so the same
    parameters give the same result (cached). Returns the intercept and the full coefficient vector
    (shrinkage applied); :func:`response_shrinkage` gives ``s``.
    """
    intercept, full, _ = _calibrated_response(_calibration_key(params, coef, cap))
    return intercept, np.asarray(full)


def response_shrinkage(params: dict[str, Any]) -> float:
    """The fitted common shrinkage factor ``s`` of the published response log odds ratios."""
    truth_coef = np.array([math.log(_v(params["response"]["odds_ratios"][n]))
                           if n in params["response"]["odds_ratios"] else 0.0 for n in FEATURE_NAMES])
    cap = float(_v(params["response"]["spread_le2_cap"]))
    return _calibrated_response(_calibration_key(params, truth_coef, cap))[2]


def _calibration_key(params: dict[str, Any], coef: np.ndarray, cap: float) -> str:
    block = params["response"]
    return json.dumps([params["covariates"], _v(block["target_overall_rate"]), _v(block["reference_rate"]),
                       _v(block["intercept_calibration"]),
                       {k: _v(e) for k, e in block.get("subgroup_rates", {}).items()}, coef.tolist(), cap])


@lru_cache(maxsize=8)
def _calibrated_response(key: str) -> tuple[float, tuple[float, ...], float]:
    from scipy.optimize import root

    covariates, target, reference, calibration, subgroups, coef, cap = json.loads(key)
    unknown = set(subgroups) - set(FEATURE_NAMES) | ({"spread_le2"} & set(subgroups))
    if unknown:
        raise OutcomeModelError(f"response.subgroup_rates names unknown or cap-derived features {sorted(unknown)}")
    if not 0.0 < reference < 1.0:
        raise OutcomeModelError(f"response.reference_rate must be strictly between 0 and 1, got {reference}")
    x = _calibration_features(calibration, covariates)
    names = sorted(subgroups)
    cols = [FEATURE_NAMES.index(name) for name in names]
    members = [x[:, j] != 0 for j in cols]
    if any(not m.any() for m in members):
        raise OutcomeModelError(f"response.subgroup_rates: no patient in the calibration sample has {names}")
    base = np.asarray(coef, dtype=float)
    le2 = FEATURE_NAMES.index("spread_le2")
    # the reference patient (all features 0) responds with sigmoid(a): the intercept is fixed by it
    intercept = math.log(reference / (1.0 - reference))

    def unpack(z: np.ndarray) -> np.ndarray:
        full = float(z[0]) * base
        full[cols] = z[1:]
        # the reference patient with 2 or fewer quadrants responds with exactly the cap, so every
        # such patient is at or below it and the response stays a plain logistic model
        full[le2] = math.log(cap / (1.0 - cap)) - intercept
        return full

    def residual(z: np.ndarray) -> np.ndarray:
        p = _capped_response(intercept, x @ unpack(z), x, cap)
        return np.array([p.mean() - target] + [p[m].mean() - subgroups[n] for m, n in zip(members, names)])

    start = np.concatenate([[1.0], base[cols]])
    solution = root(residual, start, method="hybr", options={"xtol": 1e-12})
    shrinkage = float(solution.x[0])
    if not solution.success or np.max(np.abs(residual(solution.x))) > 1e-6 or shrinkage <= 0:
        raise OutcomeModelError(f"response.target_overall_rate {target} with reference_rate {reference} and "
                                f"subgroup_rates {subgroups} cannot be reached with the spread cap {cap} and the "
                                f"cohort's covariate mix ({solution.message}, shrinkage {shrinkage:.3g}); lower the "
                                f"target or the share of 2-or-fewer-quadrant spread")
    return intercept, tuple(unpack(solution.x).tolist()), shrinkage


WEEKS_PER_MONTH = 365.25 / 12 / 7


def _calibration_features(calibration: dict[str, Any], covariates: dict[str, Any]) -> np.ndarray:
    """Feature rows of the seeded calibration sample of the cohort's covariate distribution."""
    rng = np.random.default_rng(int(calibration["seed"]))
    return encode_columns(sample_covariates(int(calibration["n"]), rng, covariates))


def cohort_marginals(params: dict[str, Any]) -> dict[str, float]:
    """Whole-cohort figures of the generator, to set next to the published ones (model card).

    Exact expectations over the seeded calibration sample (``response.intercept_calibration``):
    response rates overall, first vs repeat and for superior hypogastric neurolysis; among
    responders, the mean relief actually lived (until loss of relief or death, within the
    follow-up) in months, first vs repeat; and the reference patient's response probability and
    median time to loss of relief with death ignored.
    """
    truth = TrueModel.from_parameters(params)
    x = _calibration_features(_v(params["response"]["intercept_calibration"]), params["covariates"])
    p = truth.response_probability(x)
    repeat = x[:, FEATURE_NAMES.index("repeat_procedure")] != 0
    shp = x[:, FEATURE_NAMES.index("procedure_superior_hypogastric")] != 0
    grid = np.linspace(0.0, truth.admin_censor_weeks, 105)
    lived = np.trapezoid(truth.relieved_survival(x, grid), grid, axis=1) / WEEKS_PER_MONTH
    return {
        "response_overall": float(p.mean()),
        "response_first": float(p[~repeat].mean()),
        "response_repeat": float(p[repeat].mean()),
        "response_superior_hypogastric": float(p[shp].mean()),
        "response_reference_patient": float(truth.response_probability(np.zeros((1, len(FEATURE_NAMES))))[0]),
        "response_odds_ratio_shrinkage": response_shrinkage(params),
        "mean_relief_months_first": float(np.average(lived[~repeat], weights=p[~repeat])),
        "mean_relief_months_repeat": float(np.average(lived[repeat], weights=p[repeat])),
        # the baseline hazard is set from it (TrueModel.from_parameters), so it holds exactly
        "reference_median_weeks_to_relief_loss": float(_v(params["relief_loss"]["median_weeks_at_reference"])),
    }


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


def sample_covariates(n: int, rng: np.random.Generator, cov: dict[str, Any]) -> dict[str, np.ndarray]:
    """Draw ``n`` patients' inputs (registry-schema columns) from the ``covariates`` parameters."""
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
    return columns


def generate(n: int, seed: int, params: dict[str, Any] | None = None) -> Cohort:
    """Draw ``n`` synthetic patients with a seeded generator (same seed, same cohort)."""
    if n < 1:
        raise OutcomeModelError(f"cohort size must be at least 1, got {n}")
    params = params or load_parameters()
    rng = np.random.default_rng(seed)
    columns = sample_covariates(n, rng, params["covariates"])
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
