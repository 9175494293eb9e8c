"""``plexplan train CONFIG``: train a segmentation model from a YAML config (torch loads in ``run``)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "train"
HELP = "train a segmentation model from a YAML config (cross-validation, then the shipped model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config, e.g. segmentation/configs/us_nerve.yaml")
    parser.add_argument("--out", default="train_out", help="output folder (metrics, fold predictions, weights)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each training run after N optimiser steps (smoke test)")
    parser.add_argument("--limit-frames", type=int, default=None, help="use only the first N frames (smoke test)")
    parser.add_argument("--folds", type=int, nargs="*", default=None, help="run only these folds (0-based)")
    parser.add_argument("--no-final", action="store_true", help="skip training the final all-data model")
    parser.add_argument("--jobs", type=int, default=None,
                        help="train the fold and final models in N worker processes at once (ultrasound)")
    parser.add_argument("--bundle", default=None,
                        help="write a MONAI bundle of the final model into this folder")
    parser.add_argument("--bundle-only", action="store_true",
                        help="skip training: package an existing --out run as --bundle (CT)")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="skip training: choose the post-processing from an existing --out run's fold models")
    parser.add_argument("--weights", default="final",
                        help="weights to bundle: 'final' (all frames) or 'fold<k>' (with --bundle)")


def read_config(path: str | Path) -> dict:
    """The YAML mapping in ``path``, with ``data_dir`` resolved against the shared data folder."""
    import yaml

    from planner.config import shared_data_dir
    from planner.errors import ModelError

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{p}: cannot read the training config ({exc})") from None
    if not isinstance(raw, dict) or "task" not in raw:
        raise ModelError(f"{p}: a training config is a mapping with a 'task' key (e.g. task: us_nerve)")
    data_dir = Path(str(raw.get("data_dir", "")))
    if not data_dir.is_absolute():
        data_dir = shared_data_dir() / data_dir
    raw["data_dir"] = str(data_dir)
    return raw


def run(args: argparse.Namespace) -> int:
    from planner.errors import ModelError

    raw = read_config(args.config)
    task = raw["task"]
    if task == "ct_phantom":  # CT: segmentation/ct.py (compare networks, train, optional bundle)
        from segmentation.ct import run_training_command

        return run_training_command(args, raw)
    if task != "us_nerve":
        raise ModelError(f"{args.config}: unknown task {task!r}; this version trains 'us_nerve'")
    if args.bundle_only:
        raise ModelError("--bundle-only is for CT configs; an ultrasound run is packaged with "
                         "--calibrate-only --bundle DIR")
    from segmentation import ultrasound

    bundle_opts = raw.get("bundle") or {}
    cfg = ultrasound.TrainConfig.from_mapping(raw)
    if args.limit_frames is not None:
        cfg.limit_frames = args.limit_frames
    if args.folds is not None:
        cfg.folds_to_run = tuple(args.folds)
    if args.no_final:
        cfg.final_model = False
    if args.jobs is not None:
        cfg.parallel_jobs = args.jobs
    if not Path(cfg.data_dir).is_dir():
        raise ModelError(f"{cfg.data_dir}: training data folder not found (set PLANNER_SHARED_DATA)")
    if not args.calibrate_only:
        summary = ultrasound.run_training(cfg, args.out, max_steps=args.max_steps)
        print(f"trained in {summary['total_seconds']:.0f} s")
    if not (Path(args.out) / "cv_metrics.json").exists():
        raise ModelError(f"{args.out}: no cv_metrics.json; run the training first")
    summary = ultrasound.calibrate(cfg, args.out)
    post = summary["postprocessing"]
    print(f"post-processing chosen by nested cross-validation: background scale {post['background_scale']}, "
          f"left-right flip averaging {'on' if post['flip_tta'] else 'off'}")
    for name in ("nerve", "vessel"):
        if f"dice_{name}" in summary:
            m = summary[f"dice_{name}"]
            print(f"cross-validated {name} Dice {m['mean']:.3f} (95% CI {m['ci95'][0]:.3f}-{m['ci95'][1]:.3f}, "
                  f"n={m['n']})")
    print(f"wrote {args.out}")
    if args.bundle:
        from segmentation.ultrasound import write_us_bundle

        write_us_bundle(args.bundle, Path(args.out), cfg, name=bundle_opts.get("name", "us_nerve_seg"),
                        weights=args.weights)
        print(f"wrote bundle {args.bundle}")
    return 0
