"""Train, val and test by recording location: no location on two sides of the split.

Clips of one location share its acoustics and its view, so a model scored on a location it
was trained on looks better than it is. ``fold1_evaluate.csv`` (test) and
``fold1_train.csv`` are meant to share no location (:func:`check_locations_disjoint`
refuses a dataset where they do), and the validation clips are whole locations drawn from
``fold1_train.csv`` (:func:`assign_val`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avsc.errors import DataError

__all__ = ["assign_val", "check_locations_disjoint"]


def check_locations_disjoint(records: list[dict[str, Any]], evaluate_list: Path | str) -> None:
    """Refuse a dataset whose train and test clips share a recording location.

    Raises:
        DataError: naming ``evaluate_list`` and the first shared locations.
    """
    train_locs = {r["location"] for r in records if r["split"] in ("train", "val")}
    test_locs = {r["location"] for r in records if r["split"] == "test"}
    shared = sorted(train_locs & test_locs)
    if shared:
        raise DataError(
            evaluate_list,
            f"location(s) {', '.join(shared[:10])}"
            f"{' ...' if len(shared) > 10 else ''} appear in both fold1_train and "
            "fold1_evaluate; test results would be inflated",
            "use the official split lists, or remove those clips from one list",
        )


def assign_val(records: list[dict], val_fraction: float, seed: int) -> None:
    """Move about ``val_fraction`` of each scene's train locations (all their clips) to val.

    A scene with a single train location keeps it for training. Locations are drawn in
    sorted order with a seeded generator, so the split is the same for the same data.
    """
    if val_fraction <= 0:
        return
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for r in records:
        if r["split"] == "train":
            locs = by_label.setdefault(r["label"], [])
            if r["location"] not in locs:
                locs.append(r["location"])
    chosen: set[str] = set()
    for label in sorted(by_label):
        locations = sorted(set(by_label[label]) - chosen)
        if len(by_label[label]) < 2 or not locations:
            continue
        n_val = max(1, int(round(val_fraction * len(by_label[label]))))
        n_val = min(n_val, len(by_label[label]) - 1, len(locations))
        order = rng.permutation(len(locations))[:n_val]
        chosen.update(locations[i] for i in order)
    for r in records:
        if r["split"] == "train" and r["location"] in chosen:
            r["split"] = "val"
