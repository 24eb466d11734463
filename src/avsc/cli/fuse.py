"""``avsc fuse``: Phase II, a fusion layer + FC(10) on the backbones' embeddings."""

from __future__ import annotations

import argparse

from avsc.cli.options import (
    add_command,
    add_quiet,
    add_settings_options,
    add_shorthand,
    require_tensorflow,
    resolve_config,
)
from avsc.config import FUSION_METHODS, MODALITY_SETS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "fuse",
        help="train fusion layer + FC(10) on backbone embeddings (Phase II)",
        description="Train a fusion model (paper eqs. 1-3: f1-f3 on fc1024, f4-f6 on fc10) with "
        "mixup, KL-divergence + L2 loss and Adam, until the val log loss stops improving "
        "(fusion.patience steps) or fusion.max_steps steps, keeping the weights chosen on val by "
        "fusion.selection (default: the lowest cross-validated val log loss after calibration) "
        "and its temperature; fusion.json records them, the settings and their "
        "hash. With --method all and/or --modalities all, trains every combination into "
        "FUSION_DIR/<method>-<modalities>/ and skips folders already complete.",
        needs_tensorflow=True,
        usage="also when a complete FUSION_DIR folder was made with other settings",
    )
    parser.add_argument(
        "embeddings",
        metavar="EMBEDDINGS_DIR",
        help="folder or s3://bucket/prefix holding <backbone>.parquet files (from `avsc embed`)",
    )
    parser.add_argument("--method", required=True, choices=[*FUSION_METHODS, "all"], help="fusion function, or all six")
    parser.add_argument(
        "--modalities",
        default="audio+visual",
        choices=[*MODALITY_SETS, "all"],
        help="which backbones to fuse: audio+visual (all five), audio, visual, or each of the three",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FUSION_DIR", help="output folder or s3://bucket/prefix"
    )
    parser.add_argument(
        "--checkpoints",
        metavar="URI",
        help="folder or s3://bucket/prefix for the training state and the finished "
        "models, so a killed run resumes (default: none)",
    )
    add_quiet(parser)
    settings = add_settings_options(parser, sections="fusion")
    add_shorthand(settings, "--epochs", "fusion.epochs", type=int, metavar="N")
    add_shorthand(settings, "--max-steps", "fusion.max_steps", type=int, metavar="N")
    add_shorthand(settings, "--batch-size", "fusion.batch_size", type=int, metavar="B")
    add_shorthand(settings, "--learning-rate", "fusion.learning_rate", type=float, metavar="LR")
    add_shorthand(settings, "--mixup-alpha", "fusion.mixup_alpha", type=float, metavar="A")
    add_shorthand(settings, "--l2", "fusion.l2", type=float, metavar="L")
    add_shorthand(settings, "--seed", "fusion.seed", type=int, metavar="S")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    require_tensorflow()
    from avsc.training.fusion import train_all_fusions, train_fusion

    progress = not args.quiet
    if args.method == "all" or args.modalities == "all":
        methods = FUSION_METHODS if args.method == "all" else (args.method,)
        modality_sets = tuple(MODALITY_SETS) if args.modalities == "all" else (args.modalities,)
        results = train_all_fusions(
            args.embeddings,
            args.output,
            config=config.fusion,
            methods=methods,
            modality_sets=modality_sets,
            checkpoints=args.checkpoints,
            progress=progress,
        )
    else:
        results = [
            train_fusion(
                args.embeddings,
                args.output,
                method=args.method,
                modalities=args.modalities,
                config=config.fusion,
                checkpoints=args.checkpoints,
                progress=progress,
            )
        ]
    for r in results:
        note = " (already complete)" if r.skipped else f", {r.train_seconds:.1f} s"
        print(
            f"{r.method} {r.modalities}: best step {r.best_step}, val accuracy {r.val_accuracy:.4f}, "
            f"val log loss {r.val_log_loss_calibrated:.4f} (temperature {r.temperature:.2f}){note} -> {r.out_dir}"
        )
    return 0
