"""``avsc train``: Phase I, one backbone on a feature store."""

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
from avsc.config import BACKBONES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train one backbone on a feature store (Phase I)",
        description="Train one of the five backbones with mixup, KL-divergence + L2 loss and "
        "Adam, streaming only the backbone's feature from the store (a folder or "
        "s3://). Checkpoints every epoch (into --checkpoints, default "
        "MODEL_DIR/checkpoints) and resumes from them when re-run, also in a new "
        "process with an empty MODEL_DIR; keeps the epoch chosen on val by "
        "train.selection (default: the lowest val log loss after temperature "
        "scaling) and records its temperature, the settings and their hash in "
        "MODEL_DIR/config.json.",
        needs_tensorflow=True,
        failure="also when the training would not fit in this machine's memory (--skip-memory-check)",
        usage="also when the checkpoints are of a run with other settings",
    )
    parser.add_argument("backbone", choices=BACKBONES, help="which backbone to train")
    parser.add_argument("features", nargs="+", metavar="FEATURES", help="feature store folder(s) or s3://bucket/prefix")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL_DIR",
        help="output folder or s3://bucket/prefix (model.keras, history.json, config.json)",
    )
    parser.add_argument(
        "--checkpoints",
        metavar="URI",
        help="where per-epoch checkpoints live, a folder or s3://bucket/prefix "
        "(default: MODEL_DIR/checkpoints); a durable location lets a killed "
        "run resume after its last finished epoch",
    )
    add_quiet(parser, "no Keras progress bar")
    parser.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="start even when the estimated peak memory exceeds this machine's",
    )
    settings = add_settings_options(parser, sections="train")
    add_shorthand(settings, "--epochs", "train.epochs", type=int, metavar="N")
    add_shorthand(settings, "--batch-size", "train.batch_size", type=int, metavar="B")
    add_shorthand(settings, "--learning-rate", "train.learning_rate", type=float, metavar="LR")
    add_shorthand(settings, "--mixup-alpha", "train.mixup_alpha", type=float, metavar="A")
    add_shorthand(settings, "--l2", "train.l2", type=float, metavar="L")
    add_shorthand(
        settings,
        "--image-size",
        "train.image_size",
        type=int,
        metavar="S",
        what="visual backbones: input size in pixels",
    )
    add_shorthand(
        settings,
        "--weights",
        "train.weights",
        metavar="imagenet|none|PATH",
        what="visual backbones: ImageNet weights, random init, or a weights file",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    config = resolve_config(args)
    require_tensorflow()
    if not args.skip_memory_check:  # before TensorFlow loads: a training that cannot fit says so now
        from avsc.features.store import FeatureStore
        from avsc.preflight import check_training

        store = FeatureStore.open(args.features)  # the shapes the network will see are the store's
        check_training(args.backbone, replace(config, features=store.config))
    from avsc.training.backbone import train_backbone

    result = train_backbone(
        args.backbone,
        args.features,
        args.output,
        config=config.train,
        checkpoints=args.checkpoints,
        progress=not args.quiet,
    )
    print(
        f"{result.backbone}: best epoch {result.best_epoch}, val accuracy {result.val_accuracy:.4f}, "
        f"val log loss {result.val_log_loss_calibrated:.4f} (temperature {result.temperature:.2f}) "
        f"-> {result.model_dir}"
    )
    return 0
