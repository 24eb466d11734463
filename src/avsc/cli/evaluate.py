"""``avsc evaluate``: metrics, confusion matrices, the report and DCASE CSVs of fusion models."""

from __future__ import annotations

import argparse
import os

from avsc.cli.options import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "evaluate",
        help="metrics, confusion matrices, report.html and DCASE CSV of fusion models",
        description="Evaluate fusion models on one split with calibrated probabilities (each "
        "model's temperature, fitted on val): accuracy with 95% Wilson intervals, "
        "per-class accuracy, log loss and expected calibration error before and "
        "after calibration, confusion matrices, clip-level results of a segment run; "
        "writes metrics.json, report.html (self-contained), report.md, figures and "
        "submission-*.csv, and prints the results table.",
    )
    parser.add_argument(
        "fusion_dirs", nargs="+", metavar="FUSION_DIR", help="fusion folder(s), or the root of `avsc fuse --method all`"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="REPORT_DIR", help="output folder or s3://bucket/prefix"
    )
    parser.add_argument(
        "--embeddings", metavar="DIR", help="add one row per backbone from its embeddings (default: fusion rows only)"
    )
    parser.add_argument("--split", default="test", help="split to evaluate")
    parser.add_argument(
        "--models",
        metavar="MODELS_ROOT",
        help="folder of <backbone>/ model folders (`avsc train` outputs): their settings "
        "for the provenance block, their training curves (default: none)",
    )
    parser.add_argument(
        "--manifest",
        metavar="MANIFEST",
        help="manifest of `avsc ingest`: dataset name, synthetic or not, clips per split (default: none)",
    )
    parser.add_argument(
        "--selection",
        choices=("log_loss", "accuracy"),
        help="how the best model is chosen on val (default: as the fusion models were trained, fusion.selection)",
    )
    parser.add_argument("--run-id", help="an id for this run in the report (default: time + random)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from avsc.evaluation.evaluate import evaluate
    from avsc.evaluation.report import results_table

    result = evaluate(
        args.fusion_dirs,
        args.output,
        split=args.split,
        embeddings=args.embeddings,
        models=args.models,
        manifest=args.manifest,
        selection=args.selection,
        run_id=args.run_id,
    )
    print(results_table(result))
    print(f"report: {os.path.join(args.output, 'report.html')}")
    return 0
