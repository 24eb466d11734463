"""Warm-up of the preprocessing fork server; imported by that server only, never by avsc.

:func:`avsc.features.preprocess.preprocess` starts a ``multiprocessing`` fork server whose
preload list names this module. Importing it runs :func:`avsc.features.clip_workers.warm_up`
once, with the feature config the parent put in ``AVSC_WARMUP_FEATURES`` (JSON; the default
config when unset): the imports, numba's compilation of librosa's kernels and the filter
banks are then done before any worker is forked, and each of the workers, forked from this
warm process, starts its first clip at once instead of paying seconds of set-up. That is
what keeps ``avsc preprocess --workers 16`` from spending its start-up on 16 copies of the
same work.
"""

from __future__ import annotations

import json
import logging
import os

from avsc.config import feature_config_from_dict
from avsc.features.clip_workers import WARMUP_ENV, warm_up

_text = os.environ.get(WARMUP_ENV)
try:
    warm_up(feature_config_from_dict(json.loads(_text)) if _text else None)
except Exception as _exc:  # noqa: BLE001 -- a failed warm-up only costs each worker its own
    logging.getLogger(__name__).warning("preprocessing warm-up failed (%s); workers warm up themselves", _exc)
