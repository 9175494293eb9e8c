"""The analgesia-duration model: fit, save/load (JSON), and predict for one patient.

Three parts, each a plain regression whose coefficients and covariance live in the JSON
model file, so prediction is numpy arithmetic (no lifelines, no pandas):

* ``response``: logistic regression for initial response (all patients);
* ``relief``: Weibull PH hazard of losing relief (responders);
* ``death``: Weibull PH hazard of dying while still relieved (responders, competing event);

the last two fit jointly with one shared gamma frailty (variance theta, mean 1), so for a
responder P(still relieved and alive at t) = (1 + theta (H_relief(t) + H_death(t)))^(-1/theta)
and the cumulative incidences of losing relief and of dying while relieved follow from the
two hazards (competing risks). Parameter uncertainty enters by drawing coefficient vectors from
their estimated normal distribution (fixed seed, so the same input gives the same output);
intervals therefore widen where the training data were thin.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from planner.analgesia.features import (
    FEATURE_NAMES, FEATURES, REFERENCE, ClinicalInputs, encode, encode_columns,
)
from planner.errors import OutcomeModelError
from planner.volume import atomic_output

FORMAT = "plexplan-analgesia-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = "analgesia_model_synthetic-1.json"
TIMEPOINTS_WEEKS = (4.0, 8.0, 12.0)
GRID = np.linspace(0.0, 104.0, 521)  # weeks, 0.2-week steps; twice the 52-week follow-up
N_DRAWS = 256
DRAW_SEED = 20260101
RARE_COUNT = 20
UNCERTAIN_SE = 0.2  # standard error of the log relief-loss hazard above which we warn
DISCLAIMER = "Research and education software, not a medical device."
SYNTHETIC_LABEL = ("synthetic cohort: fit on simulated patients built from published figures, "
                   "not on patient data")


@dataclass(frozen=True)
class SubModel:
    """One regression: ``kind`` logistic ([intercept, slopes]) or weibull_ph ([log k, a, slopes])."""

    kind: str
    features: tuple[str, ...]
    params: np.ndarray
    cov: np.ndarray
    n: int
    events: int

    @property
    def n_fixed(self) -> int:
        return 1 if self.kind == "logistic" else 2

    def columns(self) -> list[int]:
        return [FEATURE_NAMES.index(f) for f in self.features]

    def coef(self, name: str, params: np.ndarray | None = None) -> np.ndarray | float:
        """Slope of ``name`` (0 when the feature was excluded from this part)."""
        params = self.params if params is None else params
        if name not in self.features:
            return np.zeros(params.shape[:-1]) if params.ndim > 1 else 0.0
        return params[..., self.n_fixed + self.features.index(name)]

    def draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` parameter vectors from N(params, cov); row 0 is the estimate itself."""
        vals, vecs = np.linalg.eigh(self.cov)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))
        out = self.params + rng.standard_normal((n, len(self.params))) @ root.T
        out[0] = self.params
        return out

    def linear(self, x: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        """Linear predictor (with intercept/log-scale) for full feature rows ``x`` [n, F]."""
        params = self.params if params is None else params
        xs = x[..., self.columns()]
        return params[..., self.n_fixed - 1] + xs @ params[self.n_fixed:].T if params.ndim == 1 else \
            params[:, self.n_fixed - 1][:, None] + params[:, self.n_fixed:] @ xs.T

    def to_json(self) -> dict[str, Any]:
        fixed = ["intercept"] if self.kind == "logistic" else ["log_shape", "log_scale"]
        return {"kind": self.kind, "parameter_names": fixed + list(self.features),
                "params": self.params.tolist(), "cov": self.cov.tolist(), "n": self.n, "events": self.events}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SubModel":
        kind = data["kind"]
        n_fixed = 1 if kind == "logistic" else 2
        names = list(data["parameter_names"])[n_fixed:]
        unknown = set(names) - set(FEATURE_NAMES)
        if kind not in ("logistic", "weibull_ph") or unknown:
            raise OutcomeModelError(f"model part has unknown kind {kind!r} or features {sorted(unknown)}")
        params = np.asarray(data["params"], dtype=float)
        cov = np.asarray(data["cov"], dtype=float)
        if params.shape != (n_fixed + len(names),) or cov.shape != (len(params), len(params)):
            raise OutcomeModelError("model part has inconsistent parameter and covariance sizes")
        return cls(kind, tuple(names), params, cov, int(data["n"]), int(data["events"]))


@dataclass(frozen=True)
class AnalgesiaModel:
    """Response part, the two competing hazards, their shared frailty and joint covariance."""

    response: SubModel
    relief: SubModel
    death: SubModel
    log_frailty_variance: float
    competing_cov: np.ndarray  # over [relief.params, death.params, log_frailty_variance]
    meta: dict[str, Any] = field(default_factory=dict)
    _draw_cache: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def parameter_draws(self, n: int) -> tuple[np.ndarray, ...]:
        """Fixed-seed draws (response, relief, death, theta) of all parameters; row 0 = estimate.

        They depend on the model only, so they are computed once per model and size.
        """
        if n not in self._draw_cache:
            rng = np.random.default_rng(DRAW_SEED)
            self._draw_cache[n] = (self.response.draws(rng, n), *self.competing_draws(rng, n))
        return self._draw_cache[n]

    @property
    def frailty_variance(self) -> float:
        return math.exp(self.log_frailty_variance)

    def competing_draws(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` joint draws (relief params, death params, theta); row 0 is the estimate."""
        mean = np.concatenate([self.relief.params, self.death.params, [self.log_frailty_variance]])
        vals, vecs = np.linalg.eigh(self.competing_cov)
        out = mean + rng.standard_normal((n, len(mean))) @ (vecs * np.sqrt(np.clip(vals, 0.0, None))).T
        out[0] = mean
        a = len(self.relief.params)
        return out[:, :a], out[:, a:-1], np.exp(out[:, -1])

    @property
    def synthetic(self) -> bool:
        return self.meta.get("training", {}).get("kind") == "synthetic"

    @property
    def label(self) -> str:
        return SYNTHETIC_LABEL if self.synthetic else str(self.meta.get("training", {}).get("label", "registry fit"))

    @property
    def version(self) -> str:
        return str(self.meta.get("model_version", "?"))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **self.meta, "label": self.label,
                "disclaimer": DISCLAIMER,
                "parts": {"response": self.response.to_json(), "relief": self.relief.to_json(),
                          "death": self.death.to_json(),
                          "frailty": {"log_variance": self.log_frailty_variance, "variance": self.frailty_variance},
                          "competing_cov": self.competing_cov.tolist()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AnalgesiaModel":
        if data.get("format") != FORMAT:
            raise OutcomeModelError(f"not an analgesia model file (format {data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise OutcomeModelError(f"analgesia model format_version {data.get('format_version')!r} is not "
                                    f"supported (expected {FORMAT_VERSION}); refit with this version")
        parts = data["parts"]
        meta = {k: v for k, v in data.items() if k not in ("format", "format_version", "parts", "label", "disclaimer")}
        relief, death = SubModel.from_json(parts["relief"]), SubModel.from_json(parts["death"])
        cov = np.asarray(parts["competing_cov"], dtype=float)
        size = len(relief.params) + len(death.params) + 1
        if cov.shape != (size, size):
            raise OutcomeModelError(f"competing_cov must be {size}x{size}, got {cov.shape}")
        return cls(SubModel.from_json(parts["response"]), relief, death,
                   float(parts["frailty"]["log_variance"]), cov, meta)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        with atomic_output(path) as tmp:
            text = json.dumps(_rounded(self.to_json()), indent=1)
            # one line per numeric row (coefficients, covariance rows) instead of one per number
            text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]",
                          lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
            tmp.write_text(text + "\n")
        return path

    # -- many patients at once (validation metrics), point estimates only --------------------
    def response_probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.response.linear(x)))

    def relief_risk(self, x: np.ndarray) -> np.ndarray:
        """Log relative hazard of losing relief (higher = shorter relief)."""
        return self.relief.linear(x)

    def relieved_survival(self, x: np.ndarray, times: np.ndarray) -> np.ndarray:
        """P(still relieved and alive at each time | responder), shape [n, len(times)]."""
        h = _cum_hazard(self.relief, self.relief.params, x, times) + _cum_hazard(self.death, self.death.params, x, times)
        return _frailty_survival(h, self.frailty_variance)


def _frailty_survival(h: np.ndarray, theta: np.ndarray | float) -> np.ndarray:
    """Survival (1 + theta H)^(-1/theta) of a gamma frailty; theta broadcasts over rows."""
    theta = np.asarray(theta, dtype=float)
    theta = theta[:, None] if theta.ndim == 1 else theta
    return np.exp(-np.log1p(theta * h) / theta)


def _rounded(value: Any) -> Any:
    """JSON tree with floats kept to 10 significant digits (a smaller, diff-friendly file)."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _cum_hazard(part: SubModel, params: np.ndarray, x: np.ndarray, times: np.ndarray) -> np.ndarray:
    """H(t) = exp(a + x.b) t**k for rows ``x`` [n, F] (params 1-D) or draws (params 2-D, x 1-D)."""
    t = np.asarray(times, dtype=float)
    with np.errstate(divide="ignore"):
        log_t = np.log(t)
    if params.ndim == 1:
        eta = part.linear(x)
        return np.exp(np.clip(eta[:, None] + np.exp(params[0]) * log_t[None, :], -700, 700))
    eta = part.linear(x[None, :], params)[:, 0]
    return np.exp(np.clip(eta[:, None] + np.exp(params[:, 0])[:, None] * log_t[None, :], -700, 700))


# ------------------------------------------------------------------------------------- fit
def fit_model(columns: Mapping[str, np.ndarray], training: Mapping[str, Any] | None = None,
              model_version: str = "1") -> AnalgesiaModel:
    """Fit the three parts on registry-schema columns (see :mod:`planner.analgesia.registry`)."""
    from planner.analgesia.survival import fit_competing_weibull, fit_logistic

    x = encode_columns(columns)
    response = np.asarray(columns["initial_response"], dtype=float)
    if len(x) < 30:
        raise OutcomeModelError(f"too few rows to fit ({len(x)}); need at least 30")
    responders = response == 1
    if responders.sum() < 20 or (~responders).sum() < 5:
        raise OutcomeModelError(f"need at least 20 responders and 5 non-responders, got "
                                f"{int(responders.sum())} and {int((~responders).sum())}")
    time = np.asarray(columns["relief_weeks"], dtype=float)[responders]
    lost = np.asarray(columns["relief_lost"], dtype=float)[responders]
    died = np.asarray(columns["died_relieved"], dtype=float)[responders]
    xr = x[responders]

    def usable(rows: np.ndarray) -> tuple[tuple[str, ...], list[int]]:
        names = tuple(f for j, f in enumerate(FEATURE_NAMES) if np.ptp(rows[:, j]) > 0)
        return names, [FEATURE_NAMES.index(f) for f in names]

    names_r, cols_r = usable(x)
    fit_r = fit_logistic(x[:, cols_r], response)
    names_l, cols_l = usable(xr)
    names_d = names_l
    if lost.sum() < 2 or died.sum() < 2:
        raise OutcomeModelError(f"need at least 2 losses of relief and 2 deaths while relieved among responders, "
                                f"got {int(lost.sum())} and {int(died.sum())}")
    cause = np.where(lost == 1, 1, np.where(died == 1, 2, 0))
    joint = fit_competing_weibull(time, cause, xr[:, cols_l], xr[:, cols_l])
    p_l, p_d = joint.params[:joint.split], joint.params[joint.split:-1]
    c_l = joint.cov[:joint.split, :joint.split]
    c_d = joint.cov[joint.split:-1, joint.split:-1]
    meta: dict[str, Any] = {
        "model_version": model_version,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training": dict(training or {"kind": "registry", "label": "registry fit"}),
        "time_unit": "weeks",
        "feature_definitions": dict(FEATURES),
        "excluded_features": {
            "response": [f for f in FEATURE_NAMES if f not in names_r],
            "relief": [f for f in FEATURE_NAMES if f not in names_l],
            "death": [f for f in FEATURE_NAMES if f not in names_d],
        },
        "support": _support(columns, x, responders),
    }
    meta["training"].update(n=int(len(x)), responders=int(responders.sum()),
                            relief_lost=int(lost.sum()), died_relieved=int(died.sum()))
    return AnalgesiaModel(
        SubModel("logistic", names_r, fit_r.params, fit_r.cov, len(x), int(responders.sum())),
        SubModel("weibull_ph", names_l, p_l, c_l, int(responders.sum()), int(lost.sum())),
        SubModel("weibull_ph", names_d, p_d, c_d, int(responders.sum()), int(died.sum())),
        float(joint.params[-1]), joint.cov, meta,
    )


def _key(value: object) -> str:
    """Category key: numbers as integers where whole (spread 4.0 -> '4')."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _support(columns: Mapping[str, np.ndarray], x: np.ndarray, responders: np.ndarray) -> dict[str, Any]:
    """How much training data backs each feature and category pair (for rarity warnings)."""
    def pairs(a: str, b: str) -> dict[str, int]:
        keys = [f"{p}|{_key(q)}" for p, q in zip(np.asarray(columns[a])[responders], np.asarray(columns[b])[responders])]
        values, counts = np.unique(np.array(keys, dtype=object), return_counts=True) if keys else ([], [])
        return {str(k): int(c) for k, c in zip(values, counts)}

    ranges = {name: [float(np.min(columns[name])), float(np.max(columns[name]))]
              for name in ("oral_morphine_mg_day", "baseline_pain", "ecog")}
    return {
        "feature_nonzero_all": {f: int(np.count_nonzero(x[:, j])) for j, f in enumerate(FEATURE_NAMES)},
        "feature_nonzero_responders": {f: int(np.count_nonzero(x[responders, j])) for j, f in enumerate(FEATURE_NAMES)},
        "responders_procedure_approach": pairs("procedure", "approach"),
        "responders_procedure_tumour_site": pairs("procedure", "tumour_site"),
        "responders_procedure_spread": pairs("procedure", "spread_quadrants"),
        "ranges": ranges,
    }


# ------------------------------------------------------------------------------ load/save
def default_model_path() -> Path:
    from planner.resources import models_dir

    return models_dir() / "analgesia" / DEFAULT_MODEL_NAME


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> AnalgesiaModel:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise OutcomeModelError(f"cannot read analgesia model {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise OutcomeModelError(f"analgesia model {path} is not valid JSON ({exc}); refit or reinstall") from exc
    try:
        return AnalgesiaModel.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise OutcomeModelError(f"analgesia model {path} is incomplete ({exc!r}); refit or reinstall") from exc


def load_model(path: Path | str | None = None) -> AnalgesiaModel:
    """The model in ``path``, or the shipped synthetic-cohort model (cached per file)."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise OutcomeModelError(f"analgesia model file {path} not found; pass --model or refit with "
                                "`plexplan outcome fit`")
    return _load_cached(str(path.resolve()), path.stat().st_mtime)


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class TimePoint:
    weeks: float
    p_relieved: float  # responds AND still relieved and alive at `weeks`
    p_relieved_interval_80: tuple[float, float]
    p_relieved_if_response: float
    p_relieved_if_response_interval_80: tuple[float, float]
    p_lost_relief_if_response: float  # cumulative incidence of losing relief (death competing)
    p_died_relieved_if_response: float  # cumulative incidence of death while still relieved


@dataclass(frozen=True)
class Contribution:
    feature: str
    description: str
    value: float
    response_odds_ratio: float
    relief_loss_hazard_ratio: float
    death_hazard_ratio: float
    median_factor: float  # this feature alone on the reference patient: median / reference median
    note: str = ""



def format_percent(value: float | None) -> str:
    """A probability as a percentage with one decimal, so 0.996 reads 99.6%, never a certain 100%."""
    return "-" if value is None else f"{100.0 * float(value):.1f}%"


def format_weeks(value: float | None) -> str:
    """Weeks with one decimal; ``None`` (beyond the model's horizon) reads "> 104"."""
    return "> 104" if value is None else f"{float(value):.1f}"

@dataclass(frozen=True)
class Estimate:
    """What the physician sees next to a plan. All times in weeks; intervals are 80%."""

    label: str
    model_version: str
    inputs: dict[str, Any]
    p_response: float
    p_response_interval_80: tuple[float, float]
    median_relief_weeks: float | None  # None: beyond 104 weeks
    relief_weeks_prediction_interval_80: tuple[float | None, float | None]
    median_relief_weeks_ci_80: tuple[float, float]
    reference_median_relief_weeks: float
    timepoints: tuple[TimePoint, ...]
    contributions: tuple[Contribution, ...]
    warnings: tuple[str, ...]
    definitions: dict[str, str]
    disclaimer: str = DISCLAIMER

    def summary(self) -> str:
        """A few lines for a report or widget (the label and disclaimer included)."""
        lo, hi = self.relief_weeks_prediction_interval_80
        p_lo, p_hi = self.p_response_interval_80
        lines = [f"P(initial response) {format_percent(self.p_response)} (80% CI {format_percent(p_lo)}-"
                 f"{format_percent(p_hi)})",
                 f"if it responds: median relief {format_weeks(self.median_relief_weeks)} weeks, 80% prediction "
                 f"interval {format_weeks(lo)}-{format_weeks(hi)} weeks",
                 "still relieved: " + ", ".join(f"{format_percent(tp.p_relieved)} at {tp.weeks:g} weeks"
                                                for tp in self.timepoints)]
        strongest = [c for c in self.contributions if abs(math.log(max(c.median_factor, 1e-9))) > 0.05][:3]
        if strongest:
            lines.append("main factors: " + ", ".join(f"{c.description} x{c.median_factor:.2f}" for c in strongest))
        lines.append(f"{self.label}. {self.disclaimer}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        for key in ("p_response_interval_80", "relief_weeks_prediction_interval_80", "median_relief_weeks_ci_80"):
            out[key] = list(out[key])
        for tp in out["timepoints"]:
            for key in ("p_relieved_interval_80", "p_relieved_if_response_interval_80"):
                tp[key] = list(tp[key])
        return out


DEFINITIONS = {
    "relief duration": "weeks from the procedure until pain relief is lost or the patient dies still "
                       "relieved, whichever comes first, for a patient who responds",
    "median_relief_weeks": "median of the predicted relief duration for this patient if they respond",
    "relief_weeks_prediction_interval_80": "80% prediction interval of THIS patient's relief duration "
                                           "(10th-90th percentile, including parameter uncertainty); null upper "
                                           "bound = beyond 104 weeks",
    "median_relief_weeks_ci_80": "80% confidence interval of the median (uncertainty of the model only; "
                                 "narrower than the prediction interval)",
    "p_relieved": "probability of responding and still being relieved and alive at that week",
    "p_relieved_if_response": "same, given that the patient responds",
    "p_lost_relief_if_response": "cumulative incidence of losing relief by that week, death as competing event",
    "p_died_relieved_if_response": "cumulative incidence of dying while still relieved by that week",
    "median_factor": "median relief of the reference patient with only this feature changed, divided by "
                     "the reference median",
    "reference patient": "celiac neurolysis, posterior retrocrural, bilateral, head tumour, no metastases, no "
                         "encasement, 4-quadrant spread, < 150 mg/day oral morphine, ECOG 0-1, no diabetes, no "
                         "prior upper-abdominal surgery, early, first procedure, pain 7/10",
}


def _quantile_time(surv: np.ndarray, level: float, grid: np.ndarray = GRID) -> np.ndarray:
    """First time each survival curve (rows) falls to ``level`` (linear interpolation); inf if never."""
    surv = np.atleast_2d(surv)
    below = surv <= level
    idx = np.argmax(below, axis=1)
    never = ~below.any(axis=1)
    i1 = np.clip(idx, 1, len(grid) - 1)
    s0, s1 = surv[np.arange(len(surv)), i1 - 1], surv[np.arange(len(surv)), i1]
    frac = np.where(s0 > s1, (s0 - level) / np.where(s0 > s1, s0 - s1, 1.0), 0.0)
    t = grid[i1 - 1] + frac * (grid[i1] - grid[i1 - 1])
    return np.where(never, np.inf, t)


def _curves(model: AnalgesiaModel, x: np.ndarray, n_draws: int) -> tuple[np.ndarray, ...]:
    """Per draw: P(response), relieved survival on GRID, the two cumulative hazards, theta."""
    pr, pl, pd, theta = model.parameter_draws(n_draws)
    p_resp = 1.0 / (1.0 + np.exp(-model.response.linear(x[None, :], pr)[:, 0]))
    h_loss = _cum_hazard(model.relief, pl, x, GRID)
    h_death = _cum_hazard(model.death, pd, x, GRID)
    return p_resp, _frailty_survival(h_loss + h_death, theta), h_loss, h_death, theta


def _point_median(model: AnalgesiaModel, x: np.ndarray) -> float:
    return float(_quantile_time(model.relieved_survival(x[None, :], GRID), 0.5)[0])


def _q80(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.1, 0.9])
    return float(lo), float(hi)


def _r(value: float, digits: int = 3) -> float:
    return float(round(value, digits))


def predict(inputs: ClinicalInputs, model: AnalgesiaModel | None = None, n_draws: int = N_DRAWS) -> Estimate:
    """Duration estimate for one patient and plan (the shipped synthetic-cohort model by default)."""
    if not isinstance(inputs, ClinicalInputs):
        raise OutcomeModelError(f"predict needs ClinicalInputs, got {type(inputs).__name__}")
    model = model or load_model()
    x = encode(inputs)
    p_resp, surv, h_loss, h_death, theta = _curves(model, x, n_draws)
    predictive = surv.mean(axis=0)
    q10, q50, q90 = (float(_quantile_time(predictive, level)[0]) for level in (0.9, 0.5, 0.1))
    medians = _quantile_time(surv, 0.5)
    medians = np.where(np.isfinite(medians), medians, GRID[-1])

    # cumulative incidences per draw: sum over grid steps of dH_j (1 + theta H_mid)^(-1/theta - 1)
    h_mid = 0.5 * ((h_loss + h_death)[:, 1:] + (h_loss + h_death)[:, :-1])
    s_mid = np.exp(-(1.0 / theta[:, None] + 1.0) * np.log1p(theta[:, None] * h_mid))
    cif_loss = np.concatenate([np.zeros((len(surv), 1)), np.cumsum(s_mid * np.diff(h_loss, axis=1), axis=1)], axis=1)
    cif_death = np.concatenate([np.zeros((len(surv), 1)), np.cumsum(s_mid * np.diff(h_death, axis=1), axis=1)], axis=1)
    timepoints = []
    for weeks in TIMEPOINTS_WEEKS:
        i = int(np.argmin(np.abs(GRID - weeks)))
        joint = p_resp * surv[:, i]
        timepoints.append(TimePoint(
            weeks=weeks, p_relieved=_r(joint.mean()), p_relieved_interval_80=tuple(map(_r, _q80(joint))),
            p_relieved_if_response=_r(surv[:, i].mean()),
            p_relieved_if_response_interval_80=tuple(map(_r, _q80(surv[:, i]))),
            p_lost_relief_if_response=_r(cif_loss[:, i].mean()),
            p_died_relieved_if_response=_r(cif_death[:, i].mean())))

    reference_median = _point_median(model, encode(REFERENCE))
    contributions = _contributions(model, x, reference_median)
    warnings = _warnings(model, inputs, x, q90)
    return Estimate(
        label=model.label, model_version=model.version, inputs=inputs.to_dict(),
        p_response=_r(p_resp.mean()), p_response_interval_80=tuple(map(_r, _q80(p_resp))),
        median_relief_weeks=_r(q50, 2) if math.isfinite(q50) else None,
        relief_weeks_prediction_interval_80=tuple(_r(q, 2) if math.isfinite(q) else None for q in (q10, q90)),
        median_relief_weeks_ci_80=tuple(_r(v, 2) for v in _q80(medians)),
        reference_median_relief_weeks=_r(reference_median, 2),
        timepoints=tuple(timepoints), contributions=contributions, warnings=warnings,
        definitions=dict(DEFINITIONS))


def _contributions(model: AnalgesiaModel, x: np.ndarray, reference_median: float) -> tuple[Contribution, ...]:
    out = []
    excluded = model.meta.get("excluded_features", {})
    for j, name in enumerate(FEATURE_NAMES):
        if x[j] == 0:
            continue
        alone = np.zeros_like(x)
        alone[j] = x[j]
        notes = [part for part in ("response", "relief", "death") if name in excluded.get(part, [])]
        out.append(Contribution(
            feature=name, description=FEATURES[name], value=float(x[j]),
            response_odds_ratio=_r(math.exp(float(model.response.coef(name)) * x[j])),
            relief_loss_hazard_ratio=_r(math.exp(float(model.relief.coef(name)) * x[j])),
            death_hazard_ratio=_r(math.exp(float(model.death.coef(name)) * x[j])),
            median_factor=_r(_point_median(model, alone) / reference_median),
            note=f"not in the training data of: {', '.join(notes)} (ratio fixed at 1)" if notes else ""))
    return tuple(sorted(out, key=lambda c: -abs(math.log(max(c.median_factor, 1e-9)))))


def _warnings(model: AnalgesiaModel, inputs: ClinicalInputs, x: np.ndarray, q90: float) -> tuple[str, ...]:
    support = model.meta.get("support", {})
    warnings = []
    if model.synthetic:
        warnings.append("estimate from a model fit on a synthetic cohort, not on patient data")
    counts = support.get("feature_nonzero_responders", {})
    for j, name in enumerate(FEATURE_NAMES):
        if x[j] != 0 and name != "baseline_pain" and counts.get(name, RARE_COUNT) < RARE_COUNT:
            warnings.append(f"rare in the training data: {FEATURES[name]} ({counts.get(name, 0)} responders)")
    for key, a, b in (("responders_procedure_approach", inputs.procedure, inputs.approach),
                      ("responders_procedure_tumour_site", inputs.procedure, inputs.tumour_site),
                      ("responders_procedure_spread", inputs.procedure, inputs.spread_quadrants)):
        table = support.get(key)
        if table is not None and table.get(f"{a}|{b}", 0) < RARE_COUNT:
            what = f"spread {b} quadrants" if key.endswith("spread") else b
            warnings.append(f"combination {a} + {what} has {table.get(f'{a}|{b}', 0)} responders in the training data")
    for name, (low, high) in support.get("ranges", {}).items():
        value = getattr(inputs, name)
        if not low <= value <= high:
            warnings.append(f"{name} = {value:g} is outside the training range {low:g}-{high:g} (extrapolation)")
    z = np.concatenate([[0.0, 1.0], x[model.relief.columns()]])
    se = math.sqrt(float(z @ model.relief.cov @ z))
    if se > UNCERTAIN_SE:
        warnings.append(f"few comparable patients in the training data: the estimate is uncertain (standard "
                        f"error of the log relief-loss hazard {se:.2f}, above {UNCERTAIN_SE}); see the intervals")
    if not math.isfinite(q90):
        warnings.append("upper end of the relief interval is beyond 104 weeks")
    elif q90 > float(model.meta.get("training", {}).get("follow_up_weeks", 52.0)):
        warnings.append("upper end of the relief interval is beyond the training follow-up (extrapolation)")
    return tuple(warnings)

