"""Maximum-likelihood fits in numpy: logistic regression and Weibull proportional hazards.

Damped Newton with analytic gradient and Hessian, so the parameter covariance (inverse
observed information) comes with the fit and predictions need nothing but the stored
numbers. A tiny ridge penalty on the slopes (not the intercept or shape) keeps a fit finite
under (quasi-)separation, which small registries produce; it is stored with the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import OutcomeModelError


@dataclass(frozen=True)
class Fit:
    """Estimated parameters, their covariance and the log-likelihood at the optimum."""

    params: np.ndarray
    cov: np.ndarray
    loglik: float
    iterations: int


def _newton(value_grad_hess, start: np.ndarray, what: str, max_iter: int = 200, tol: float = 1e-9) -> Fit:
    params = start.astype(float).copy()
    value, grad, hess = value_grad_hess(params)
    for iteration in range(1, max_iter + 1):
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            step = grad * 1e-3
        scale = 1.0
        while scale > 1e-10:
            trial = params + scale * step
            t_value, t_grad, t_hess = value_grad_hess(trial)
            if np.isfinite(t_value) and t_value >= value - 1e-12:
                break
            scale *= 0.5
        else:
            raise OutcomeModelError(f"{what} fit did not converge (no improving step)")
        converged = abs(t_value - value) < tol * (1.0 + abs(value)) and np.max(np.abs(scale * step)) < 1e-6
        params, value, grad, hess = trial, t_value, t_grad, t_hess
        if converged:
            break
    else:
        raise OutcomeModelError(f"{what} fit did not converge in {max_iter} iterations")
    info = -hess
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError as exc:
        raise OutcomeModelError(f"{what} fit: information matrix is singular ({exc}); "
                                "a feature may be constant or collinear in the data") from exc
    cov = 0.5 * (cov + cov.T)
    if not np.all(np.isfinite(cov)) or np.min(np.linalg.eigvalsh(cov)) <= 0:
        raise OutcomeModelError(f"{what} fit: parameter covariance is not positive definite")
    return Fit(params=params, cov=cov, loglik=float(value), iterations=iteration)


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> Fit:
    """Logistic regression; params = [intercept, slopes...] (log-odds)."""
    z = np.column_stack([np.ones(len(x)), x])
    penalty = np.full(z.shape[1], ridge)
    penalty[0] = 0.0

    def vgh(b: np.ndarray):
        eta = z @ b
        p = 1.0 / (1.0 + np.exp(-eta))
        value = float(np.sum(y * eta - np.logaddexp(0.0, eta)) - 0.5 * np.sum(penalty * b * b))
        grad = z.T @ (y - p) - penalty * b
        hess = -(z * (p * (1 - p))[:, None]).T @ z - np.diag(penalty)
        return value, grad, hess

    mean = np.clip(np.mean(y), 1e-3, 1 - 1e-3)
    start = np.zeros(z.shape[1])
    start[0] = np.log(mean / (1 - mean))
    return _newton(vgh, start, "logistic")


def fit_weibull_ph(time: np.ndarray, event: np.ndarray, x: np.ndarray, ridge: float = 1e-3) -> Fit:
    """Weibull PH, H(t|x) = exp(a + x.b) t**k; params = [log k, a, b...].

    Right-censored: ``event`` 1 for the event of interest, 0 otherwise (censored or the
    competing event, which makes this the cause-specific hazard).
    """
    if np.any(time <= 0) or not np.all(np.isfinite(time)):
        raise OutcomeModelError("Weibull fit needs finite times > 0")
    if event.sum() < 2:
        raise OutcomeModelError(f"Weibull fit needs at least 2 events, got {int(event.sum())}")
    z = np.column_stack([np.ones(len(x)), x])
    log_t = np.log(time)
    penalty = np.full(z.shape[1] + 1, ridge)
    penalty[:2] = 0.0

    def vgh(params: np.ndarray):
        u, beta = params[0], params[1:]
        k = np.exp(u)
        eta = z @ beta
        w = np.exp(np.clip(eta + k * log_t, -700, 700))
        value = float(np.sum(event * (u + (k - 1) * log_t + eta)) - np.sum(w)
                      - 0.5 * np.sum(penalty * params * params))
        kl = k * log_t
        g_beta = z.T @ (event - w)
        g_u = np.sum(event * (1 + kl)) - np.sum(w * kl)
        grad = np.concatenate([[g_u], g_beta]) - penalty * params
        h = np.empty((len(params), len(params)))
        h[1:, 1:] = -(z * w[:, None]).T @ z
        h[0, 1:] = h[1:, 0] = -(z * (w * kl)[:, None]).sum(axis=0)
        h[0, 0] = np.sum(event * kl) - np.sum(w * kl * (1 + kl))
        return value, grad, h - np.diag(penalty)

    start = np.zeros(z.shape[1] + 1)
    start[1] = np.log(event.sum() / time.sum())
    return _newton(vgh, start, "Weibull")


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier step function: distinct event times and survival just after each."""
    order = np.argsort(time, kind="stable")
    t, d = time[order], event[order]
    unique, first = np.unique(t, return_index=True)
    at_risk = len(t) - first
    deaths = np.add.reduceat(d, first) if len(t) else np.array([])
    surv = np.cumprod(1.0 - deaths / at_risk)
    return unique, surv


def step_value(times: np.ndarray, surv: np.ndarray, at: np.ndarray, left: bool = False) -> np.ndarray:
    """Evaluate a KM step function at ``at`` (``left``: the value just before ``at``)."""
    idx = np.searchsorted(times, at, side="left" if left else "right") - 1
    return np.where(idx >= 0, surv[np.clip(idx, 0, None)], 1.0)


@dataclass(frozen=True)
class CompetingFit:
    """Shared-gamma-frailty Weibull competing risks: params = [cause 1 | cause 2 | log theta]."""

    params: np.ndarray
    cov: np.ndarray
    loglik: float
    split: int  # params[:split] cause 1 ([log k, a, b...]), params[split:-1] cause 2


#: Weakly informative normal prior on log(frailty variance): centre 0 (theta = 1), sd 2. It keeps
#: the estimate finite when the data show no frailty (theta -> 0) and hardly moves it otherwise.
LOG_THETA_PRIOR = (0.0, 2.0)


def fit_competing_weibull(time: np.ndarray, cause: np.ndarray, x1: np.ndarray, x2: np.ndarray,
                          ridge: float = 1e-3) -> CompetingFit:
    """Two cause-specific Weibull PH hazards sharing one gamma frailty (mean 1, variance theta).

    Given frailty Z the hazards are Z h_j(t|x); integrating Z out, a subject with H = H1 + H2
    survives with (1 + theta H)^(-1/theta) and fails from cause j with density
    h_j (1 + theta H)^(-1/theta - 1). ``cause``: 0 censored, 1 or 2. Maximised with L-BFGS on
    the analytic gradient; the covariance is the inverse of a finite-difference Hessian.
    """
    from scipy.optimize import minimize

    if np.any(time <= 0) or not np.all(np.isfinite(time)):
        raise OutcomeModelError("competing-risks fit needs finite times > 0")
    d1, d2 = (cause == 1).astype(float), (cause == 2).astype(float)
    start1 = fit_weibull_ph(time, d1, x1, ridge).params
    start2 = fit_weibull_ph(time, d2, x2, ridge).params
    z1 = np.column_stack([np.ones(len(x1)), x1])
    z2 = np.column_stack([np.ones(len(x2)), x2])
    log_t = np.log(time)
    split = len(start1)
    n2 = len(start2)
    penalty = np.zeros(split + n2 + 1)
    penalty[2:split] = ridge
    penalty[split + 2:split + n2] = ridge
    mu, sd = LOG_THETA_PRIOR
    d = d1 + d2

    def neg(p: np.ndarray) -> tuple[float, np.ndarray]:
        p1, p2, v = p[:split], p[split:split + n2], p[-1]
        k1, k2, theta = np.exp(p1[0]), np.exp(p2[0]), np.exp(v)
        e1, e2 = z1 @ p1[1:], z2 @ p2[1:]
        h1 = np.exp(np.clip(e1 + k1 * log_t, -700, 700))
        h2 = np.exp(np.clip(e2 + k2 * log_t, -700, 700))
        big_h = h1 + h2
        log_d = np.log1p(theta * big_h)
        c = 1.0 / theta + d
        value = (np.sum(d1 * (p1[0] + (k1 - 1) * log_t + e1)) + np.sum(d2 * (p2[0] + (k2 - 1) * log_t + e2))
                 - np.sum(c * log_d) - 0.5 * np.sum(penalty * p * p) - 0.5 * ((v - mu) / sd) ** 2)
        ratio = c * theta / (1.0 + theta * big_h)
        g1_eta = d1 - ratio * h1
        g2_eta = d2 - ratio * h2
        grad = np.empty_like(p)
        grad[0] = np.sum(d1 * (1 + k1 * log_t) - ratio * h1 * k1 * log_t)
        grad[1:split] = z1.T @ g1_eta
        grad[split] = np.sum(d2 * (1 + k2 * log_t) - ratio * h2 * k2 * log_t)
        grad[split + 1:split + n2] = z2.T @ g2_eta
        grad[-1] = np.sum(log_d / theta - c * theta * big_h / (1.0 + theta * big_h))
        grad -= penalty * p
        grad[-1] -= (v - mu) / sd ** 2
        return -value, -grad

    start = np.concatenate([start1, start2, [np.log(0.1)]])
    res = minimize(neg, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-7})
    if not np.all(np.isfinite(res.x)):
        raise OutcomeModelError(f"competing-risks fit did not converge ({res.message})")
    p = res.x
    hess = np.empty((len(p), len(p)))
    for j in range(len(p)):
        step = 1e-5 * max(1.0, abs(p[j]))
        up, down = p.copy(), p.copy()
        up[j] += step
        down[j] -= step
        hess[:, j] = (neg(up)[1] - neg(down)[1]) / (2 * step)
    hess = 0.5 * (hess + hess.T)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError as exc:
        raise OutcomeModelError(f"competing-risks fit: information matrix is singular ({exc})") from exc
    if not np.all(np.isfinite(cov)) or np.min(np.linalg.eigvalsh(cov)) <= 0:
        raise OutcomeModelError("competing-risks fit: parameter covariance is not positive definite; "
                                "the registry may be too small or a feature collinear")
    return CompetingFit(params=p, cov=cov, loglik=float(-res.fun), split=split)
