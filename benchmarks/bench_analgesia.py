"""Analgesia-duration model on a held-out synthetic cohort, next to the generator's oracle.

Prints, for the shipped model and for a model fit here on a fresh seeded cohort: Harrell's C of
the relief-loss risk (model vs the generator's true hazard; acceptance: gap < 0.02), calibration
ICI of P(relief ended by 4/8/12 weeks) (acceptance: < 0.05; the oracle's own ICI shows the floor
of the estimator), the integrated Brier score (weeks 0-26) next to the covariate-free value, the
response AUC, and the time of one prediction and of one fit.

    python benchmarks/bench_analgesia.py [--n-test 20000] [--n-train 5000] [--seed 7]

Exit status 1 when an acceptance figure is missed.
"""

from __future__ import annotations

import argparse
import sys
import time

from planner.analgesia import ClinicalInputs, fit_model, load_model, predict
from planner.analgesia.cohort import generate
from planner.analgesia.model import default_model_path
from planner.analgesia.refit import held_out_metrics

GAP_LIMIT = 0.02
ICI_LIMIT = 0.05


def _report(name: str, figures: dict[str, float]) -> bool:
    gap = figures["oracle_c_index_relief"] - figures["c_index_relief"]
    ici = figures["ici_relief_ended_max"]
    print(f"{name}")
    print(f"  held-out cohort      n={int(figures['n'])} responders={int(figures['responders'])} "
          f"seed={int(figures['seed'])}")
    print(f"  C-index relief       model {figures['c_index_relief']:.4f}   oracle {figures['oracle_c_index_relief']:.4f}"
          f"   gap {gap:+.4f} (limit {GAP_LIMIT})")
    print(f"  AUC response         model {figures['auc_response']:.4f}   oracle {figures['oracle_auc_response']:.4f}")
    print(f"  ICI relief ended     4w {figures['ici_relief_ended_4w']:.4f}  8w {figures['ici_relief_ended_8w']:.4f}"
          f"  12w {figures['ici_relief_ended_12w']:.4f}  max {ici:.4f} (limit {ICI_LIMIT}; oracle max "
          f"{figures['oracle_ici_relief_ended_max']:.4f})")
    print(f"  ICI response         {figures['ici_response']:.4f}")
    print(f"  integrated Brier     model {figures['integrated_brier_0_26w']:.4f}   no covariates "
          f"{figures['integrated_brier_null']:.4f}  (weeks 0-26, IPCW)")
    ok = gap < GAP_LIMIT and ici < ICI_LIMIT
    print(f"  acceptance           {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=20000)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7, help="held-out cohort seed (training uses seed+1)")
    args = parser.parse_args()
    print("analgesia-duration benchmark (synthetic cohort; research software, not a medical device)")

    shipped = load_model()
    ok = _report(f"shipped model {shipped.version} ({default_model_path().name}, trained on "
                 f"{shipped.meta['training']['n']} synthetic patients)", held_out_metrics(shipped, args.seed, args.n_test))

    t0 = time.perf_counter()
    fresh = fit_model(generate(args.n_train, args.seed + 1).columns, {"kind": "synthetic"})
    fit_s = time.perf_counter() - t0
    ok &= _report(f"model fit here on {args.n_train} synthetic patients (seed {args.seed + 1}, fit {fit_s:.2f} s)",
                  held_out_metrics(fresh, args.seed, args.n_test))

    inputs = ClinicalInputs(spread_quadrants=3, distant_metastases=True, ecog=2, early_procedure=False)
    predict(inputs, shipped)
    t0 = time.perf_counter()
    repeats = 50
    for _ in range(repeats):
        predict(inputs, shipped)
    print(f"one prediction (256 parameter draws): {1000 * (time.perf_counter() - t0) / repeats:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
