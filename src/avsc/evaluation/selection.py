"""Choosing the best fusion model on the val split (the evaluated split never decides).

:func:`selection_rule` says which rule chooses (as asked, else as the fusion models were
trained), :func:`best_result` applies it (:data:`avsc.scoring.calibration.SELECTION_RULES`),
and :func:`mark_within_one_se` flags the candidates val cannot tell from the chosen one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from avsc.config import FUSION_METHODS
from avsc.errors import ConfigError
from avsc.records import FusionInfo
from avsc.records.evaluation_result import FusionResult
from avsc.scoring.calibration import SELECTION_RULES, selection_key

__all__ = ["selection_rule", "best_result", "mark_within_one_se"]

log = logging.getLogger(__name__)


def best_result(
    results: Sequence[FusionResult], selection: str = "log_loss", modalities: str | None = None
) -> FusionResult | None:
    """The result the val split prefers under ``selection`` (see
    :data:`avsc.scoring.calibration.SELECTION_RULES`); the evaluated split never decides.

    Args:
        results: the candidates, chosen on ``val_accuracy`` and their selection log loss
            (the cross-validated val log loss of the calibrated model; ``val_log_loss`` where
            that is not recorded).
        modalities: only results of this modality set; None: audio+visual ones when there
            are any, else all.

    Returns:
        The chosen result, or None when there is none. Ties go to the earlier method.
    """
    if modalities is None:
        pool = [r for r in results if r.modalities == "audio+visual"] or list(results)
    else:
        pool = [r for r in results if r.modalities == modalities]
    if not pool:
        return None

    def key(r: FusionResult) -> tuple[float, float, int]:
        order = FUSION_METHODS.index(r.method) if r.method in FUSION_METHODS else len(FUSION_METHODS)
        return (*selection_key(r.val_accuracy, r.selection_log_loss, selection), -order)

    return max(pool, key=key)


def mark_within_one_se(results: Sequence[FusionResult], chosen: Mapping[str, FusionResult]) -> list[FusionResult]:
    """``results`` with ``val_within_one_se`` set: within one standard error (the chosen
    model's) of the chosen model of their modality set, by selection log loss."""
    out = []
    for r in results:
        best = chosen.get(r.modalities)
        se = None if best is None else best.val_selection_log_loss_se
        within = best is not None and (
            r is best or (se is not None and abs(r.selection_log_loss - best.selection_log_loss) <= se)
        )
        out.append(dataclasses.replace(r, val_within_one_se=within))
    return out


def selection_rule(metas: Mapping[Path, FusionInfo], asked: str | None) -> str:
    """The rule that picks the best model: as asked, else as the fusion models were trained
    (``log_loss``, with a warning, when they were trained with different rules).

    Raises:
        ConfigError: ``asked`` is not one of :data:`avsc.scoring.calibration.SELECTION_RULES`.
    """
    if asked is not None:
        if asked not in SELECTION_RULES:
            raise ConfigError(f"selection must be one of {', '.join(SELECTION_RULES)}, got {asked!r}")
        return asked
    recorded = {m.selection for m in metas.values()}
    if len(recorded) == 1:
        return recorded.pop()
    if recorded:
        log.warning(
            "fusion models were selected by different rules (%s); choosing the best by log_loss",
            ", ".join(sorted(recorded)),
        )
    return "log_loss"
