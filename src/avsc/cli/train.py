"""``avsc train`` (Phase I: one backbone) and ``avsc embed`` (its embeddings as Parquet)."""

from __future__ import annotations

import argparse
import os

from avsc.config import BACKBONES, PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``embed``."""
    train = subparsers.add_parser(
        "train", help="train one backbone on a feature store (Phase I)",
        description="Train one of the five backbones with mixup, KL-divergence + L2 loss and Adam. "
                    "Streams only the backbone's feature from the store (a folder or s3://). "
                    "Checkpoints every epoch (into --checkpoints, default MODEL_DIR/checkpoints) and "
                    "resumes from them when re-run, also from a new process with an empty MODEL_DIR; "
                    "selects the epoch with the best val accuracy.")
    train.add_argument("backbone", choices=BACKBONES)
    train.add_argument("features", nargs="+", metavar="FEATURES",
                       help="feature store folder(s) or s3://bucket/prefix")
    train.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                       help="output folder or s3://bucket/prefix")
    train.add_argument("--checkpoints", metavar="URI",
                       help="where per-epoch checkpoints live, a folder or s3://bucket/prefix "
                            "(default: MODEL_DIR/checkpoints); a durable location lets a killed "
                            "run resume after its last finished epoch")
    train.add_argument("--preset", choices=PRESETS, default="paper")
    train.add_argument("--config", metavar="FILE", help="JSON or TOML settings file")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--mixup-alpha", type=float)
    train.add_argument("--l2", type=float)
    train.add_argument("--image-size", type=int)
    train.add_argument("--weights", metavar="imagenet|none|PATH",
                       help="visual backbones: ImageNet weights, random init, or a weights file")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(handler=run_train)

    embed = subparsers.add_parser(
        "embed", help="write a trained backbone's fc1024/fc10 embeddings of every clip",
        description="Embed every clip of every split with a trained backbone into one Parquet file.")
    embed.add_argument("model_dir", metavar="MODEL_DIR", help="output of `avsc train` (folder or s3://)")
    embed.add_argument("features", nargs="+", metavar="FEATURES",
                       help="feature store folder(s) or s3://bucket/prefix")
    embed.add_argument("-o", "--output", required=True, metavar="EMBEDDINGS.parquet",
                       help="Parquet file to write (path or s3://)")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(handler=run_embed)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out


def run_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from avsc.config import load_config
    from avsc.training.backbone import train_backbone

    config = load_config(args.config, preset=args.preset, overrides={"train": {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "mixup_alpha": args.mixup_alpha, "l2": args.l2, "image_size": args.image_size,
        "weights": args.weights}})
    result = train_backbone(args.backbone, args.features, args.output, config=config.train,
                            checkpoints=args.checkpoints, progress=not args.quiet)
    print(f"{result.backbone}: best epoch {result.best_epoch}, val accuracy {result.val_accuracy:.4f}, "
          f"val log loss {result.val_log_loss:.4f} -> {result.model_dir}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from avsc.training.embeddings import embed_clips

    result = embed_clips(args.model_dir, args.features, args.output, batch_size=args.batch_size,
                         progress=not args.quiet)
    print(f"{result.backbone}: {result.n_clips} clips -> {result.path}")
    return 0
