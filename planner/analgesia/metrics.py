"""Validation figures: C-index, calibration (ICI), integrated Brier score, cross-validation.

Harrell's C and the Cox model under the survival calibration curve come from lifelines
(imported here, inside functions, so prediction never loads it). Definitions:

* ``c_index_relief``: Harrell's C of the relief-loss risk score among responders, relief loss
  as the event and death/follow-up end as censoring (cause-specific).
* ``auc_response``: area under the ROC curve of P(initial response).
* ``ici_relief_ended_<t>w``: integrated calibration index (Austin et al. 2020, Stat Med 39:2714)
  of P(relief ended -- lost or died -- by t weeks | responder): mean absolute difference between
  predicted and smoothed observed probability (Cox model on a restricted cubic spline of the
  complementary log-log of the prediction).
* ``ici_response``: the same for the response probability (logistic spline smoother).
* ``integrated_brier_0_26w``: IPCW Brier score of P(still relieved and alive | responder),
  averaged over weeks 0-26; ``integrated_brier_null`` is the Kaplan-Meier (no covariates) value.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from planner.analgesia.features import encode_columns
from planner.analgesia.survival import fit_logistic, kaplan_meier, step_value

ICI_TIMES = (4.0, 8.0, 12.0)
BRIER_GRID = np.linspace(0.5, 26.0, 52)


def concordance(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: higher ``risk`` should mean an earlier event."""
    from lifelines.utils import concordance_index

    return float(concordance_index(time, -risk, event))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC area (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    ranks = rankdata(score)
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _rcs(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Restricted cubic spline basis (Harrell), linear term plus len(knots)-2 terms."""
    k = knots
    scale = (k[-1] - k[0]) ** 2
    cols = [x]
    for j in range(len(k) - 2):
        term = (np.clip(x - k[j], 0, None) ** 3
                - np.clip(x - k[-2], 0, None) ** 3 * (k[-1] - k[j]) / (k[-1] - k[-2])
                + np.clip(x - k[-1], 0, None) ** 3 * (k[-2] - k[j]) / (k[-1] - k[-2]))
        cols.append(term / scale)
    return np.column_stack(cols)


def ici_survival(time: np.ndarray, event: np.ndarray, p_event: np.ndarray, t0: float) -> float:
    """ICI of predicted P(event by t0) against a Cox-spline smoothed observed probability."""
    import pandas as pd
    from lifelines import CoxPHFitter

    p = np.clip(p_event, 1e-6, 1 - 1e-6)
    cll = np.log(-np.log(1 - p))
    knots = np.quantile(cll, [0.1, 0.5, 0.9])
    if np.ptp(knots) < 1e-9:
        basis = cll[:, None]
    else:
        basis = _rcs(cll, knots)
    frame = pd.DataFrame(basis, columns=[f"s{j}" for j in range(basis.shape[1])])
    frame["T"], frame["E"] = time, event
    cox = CoxPHFitter(penalizer=1e-6).fit(frame, "T", "E")
    observed = 1 - cox.predict_survival_function(frame.drop(columns=["T", "E"]), times=[t0]).to_numpy()[0]
    return float(np.mean(np.abs(p - observed)))


def ici_binary(y: np.ndarray, p: np.ndarray) -> float:
    """ICI of predicted probabilities of a binary outcome (logistic spline smoother)."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    basis = _rcs(logit, np.quantile(logit, [0.1, 0.5, 0.9]))
    fit = fit_logistic(basis, np.asarray(y, dtype=float), ridge=1e-6)
    smooth = 1 / (1 + np.exp(-(fit.params[0] + basis @ fit.params[1:])))
    return float(np.mean(np.abs(p - smooth)))


def integrated_brier(time: np.ndarray, event: np.ndarray, surv: np.ndarray, grid: np.ndarray = BRIER_GRID) -> float:
    """IPCW Brier score (Graf et al. 1999) of survival predictions ``surv`` [n, len(grid)], averaged over grid."""
    c_times, c_surv = kaplan_meier(time, 1.0 - event)
    g_at_t = np.clip(step_value(c_times, c_surv, time, left=True), 1e-3, None)
    g_grid = np.clip(step_value(c_times, c_surv, grid), 1e-3, None)
    scores = []
    for j, t in enumerate(grid):
        died = (time <= t) & (event == 1)
        alive = time > t
        s = surv[:, j]
        scores.append(np.mean(died * s ** 2 / g_at_t + alive * (1 - s) ** 2 / g_grid[j]))
    return float(np.trapezoid(scores, grid) / (grid[-1] - grid[0]))


def evaluate(model: Any, columns: Mapping[str, np.ndarray], x: np.ndarray | None = None) -> dict[str, float]:
    """All validation figures of ``model`` (an :class:`AnalgesiaModel`) on registry columns."""
    x = encode_columns(columns) if x is None else x
    return _figures(columns, model.response_probability(x), model.relief_risk(x),
                    model.relieved_survival(x, np.array(sorted({*ICI_TIMES, *BRIER_GRID}))))


def _figures(columns: Mapping[str, np.ndarray], p_resp: np.ndarray, risk: np.ndarray, surv: np.ndarray) -> dict[str, float]:
    times = np.array(sorted({*ICI_TIMES, *BRIER_GRID}))
    y = np.asarray(columns["initial_response"], dtype=float)
    r = y == 1
    t = np.asarray(columns["relief_weeks"], dtype=float)[r]
    lost = np.asarray(columns["relief_lost"], dtype=float)[r]
    ended = np.clip(lost + np.asarray(columns["died_relieved"], dtype=float)[r], 0, 1)
    out = {
        "n": float(len(y)), "responders": float(r.sum()),
        "auc_response": auc(y, p_resp), "ici_response": ici_binary(y, p_resp),
        "c_index_relief": concordance(t, lost, risk[r]),
    }
    for t0 in ICI_TIMES:
        out[f"ici_relief_ended_{t0:g}w"] = ici_survival(t, ended, 1 - surv[r][:, list(times).index(t0)], t0)
    out["ici_relief_ended_max"] = max(out[f"ici_relief_ended_{t0:g}w"] for t0 in ICI_TIMES)
    brier_cols = [list(times).index(g) for g in BRIER_GRID]
    out["integrated_brier_0_26w"] = integrated_brier(t, ended, surv[r][:, brier_cols])
    km_t, km_s = kaplan_meier(t, ended)
    null = np.tile(step_value(km_t, km_s, BRIER_GRID), (int(r.sum()), 1))
    out["integrated_brier_null"] = integrated_brier(t, ended, null)
    return out


def cross_validate(columns: Mapping[str, np.ndarray], folds: int = 5, seed: int = 0) -> dict[str, float]:
    """K-fold cross-validated figures (held-out predictions pooled over the folds)."""
    from planner.analgesia.model import fit_model

    n = len(columns["initial_response"])
    if folds < 2 or n < folds * 30:
        raise ValueError(f"cross-validation needs folds >= 2 and at least {folds * 30} rows, got {n}")
    x = encode_columns(columns)
    times = np.array(sorted({*ICI_TIMES, *BRIER_GRID}))
    assign = np.random.default_rng(seed).permutation(n) % folds
    p_resp, risk, surv = np.zeros(n), np.zeros(n), np.zeros((n, len(times)))
    for k in range(folds):
        train = {name: np.asarray(v)[assign != k] for name, v in columns.items()}
        held = assign == k
        model = fit_model(train)
        p_resp[held] = model.response_probability(x[held])
        risk[held] = model.relief_risk(x[held])
        surv[held] = model.relieved_survival(x[held], times)
    out = _figures(columns, p_resp, risk, surv)
    out["folds"] = float(folds)
    return out
