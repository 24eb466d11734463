"""``avsc fuse`` (Phase II: fusion f1-f6 on embeddings) and ``avsc evaluate`` (tables, figures, CSV)."""

from __future__ import annotations

import argparse
import importlib.util
import os

from avsc.config import FUSION_METHODS, MODALITY_SETS, PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fuse`` and ``evaluate`` (and ``bundle``/``predict`` when that module is installed)."""
    fuse = subparsers.add_parser(
        "fuse", help="train fusion layer + FC(10) on backbone embeddings (Phase II)",
        description="Train a fusion model (paper eqs. 1-3: f1-f3 on fc1024, f4-f6 on fc10) with mixup, "
                    "KL-divergence + L2 loss and Adam, keeping the epoch with the best val accuracy. "
                    "With --method all and/or --modalities all, trains every combination into "
                    "FUSION_DIR/<method>-<modalities>/ and skips folders already complete.")
    fuse.add_argument("embeddings", metavar="EMBEDDINGS_DIR",
                      help="folder (or s3://bucket/prefix) holding <backbone>.parquet files")
    fuse.add_argument("--method", required=True, choices=[*FUSION_METHODS, "all"])
    fuse.add_argument("--modalities", default="audio+visual", choices=[*MODALITY_SETS, "all"],
                      help="which backbones to fuse (default: audio+visual, all five)")
    fuse.add_argument("-o", "--output", required=True, metavar="FUSION_DIR", help="folder or s3://bucket/prefix")
    fuse.add_argument("--checkpoints", metavar="URI",
                      help="folder or s3://bucket/prefix for training state and finished models, so a "
                           "killed run resumes (default: none)")
    fuse.add_argument("--preset", choices=PRESETS, default="paper")
    fuse.add_argument("--config", metavar="FILE", help="JSON or TOML settings file")
    fuse.add_argument("--epochs", type=int)
    fuse.add_argument("--batch-size", type=int)
    fuse.add_argument("--learning-rate", type=float)
    fuse.add_argument("--mixup-alpha", type=float)
    fuse.add_argument("--l2", type=float)
    fuse.add_argument("--seed", type=int)
    fuse.add_argument("--quiet", action="store_true", help="no progress output")
    fuse.set_defaults(handler=run_fuse)

    evaluate = subparsers.add_parser(
        "evaluate", help="metrics, confusion matrices, report.html and DCASE CSV of fusion models",
        description="Evaluate fusion models on one split (default: test): accuracy, per-class accuracy, "
                    "log loss, confusion matrices; writes metrics.json, report.html (self-contained), "
                    "report.md, confusion-*.png and submission-*.csv, and prints the results table.")
    evaluate.add_argument("fusion_dirs", nargs="+", metavar="FUSION_DIR",
                          help="fusion folder(s), or the root of `avsc fuse --method all` (or s3://)")
    evaluate.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder or s3://bucket/prefix")
    evaluate.add_argument("--embeddings", metavar="DIR", help="add one row per backbone from its embeddings")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: test)")
    evaluate.set_defaults(handler=run_evaluate)

    if importlib.util.find_spec("avsc.cli.inference") is not None:
        from avsc.cli import inference

        inference.register(subparsers)


def run_fuse(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from avsc.config import load_config
    from avsc.training.fusion import train_all_fusions, train_fusion

    config = load_config(args.config, preset=args.preset, overrides={"fusion": {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "mixup_alpha": args.mixup_alpha, "l2": args.l2, "seed": args.seed}})
    progress = not args.quiet
    if args.method == "all" or args.modalities == "all":
        methods = FUSION_METHODS if args.method == "all" else (args.method,)
        modality_sets = tuple(MODALITY_SETS) if args.modalities == "all" else (args.modalities,)
        results = train_all_fusions(args.embeddings, args.output, config=config.fusion, methods=methods,
                                    modality_sets=modality_sets, checkpoints=args.checkpoints,
                                    progress=progress)
    else:
        results = [train_fusion(args.embeddings, args.output, method=args.method, modalities=args.modalities,
                                config=config.fusion, checkpoints=args.checkpoints, progress=progress)]
    for r in results:
        note = " (already complete)" if r.skipped else f", {r.train_seconds:.1f} s"
        print(f"{r.method} {r.modalities}: best epoch {r.best_epoch}, val accuracy {r.val_accuracy:.4f}, "
              f"val log loss {r.val_log_loss:.4f}{note} -> {r.out_dir}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from avsc.evaluation.evaluate import evaluate
    from avsc.evaluation.report import results_table

    metrics = evaluate(args.fusion_dirs, args.output, split=args.split, embeddings_dir=args.embeddings)
    print(results_table(metrics))
    print(f"report: {os.path.join(args.output, 'report.html')}")
    return 0
