"""Phase II: the fusion layer and dense layer on frozen embeddings (paper, section II-B).

Six fusion functions combine the embeddings of the five backbones — ``ae_g, ae_m, ae_c``
(audio: aud-gam, aud-mel, aud-cqt) and ``ve_i, ve_c`` (visual: vis-inc, vis-conv) — into
one audio-visual embedding, which ``FC(10)`` + softmax classifies. ``.`` below is the
element-wise product; every ``w`` and ``b`` is a trainable vector of the embedding width.

- eq. (1), f1 / f4 (:class:`WeightedSumFusion`)::

      f = ae_g.w1 + ae_m.w2 + ae_c.w3 + ve_i.w4 + ve_c.w5 + b

- eq. (2), f2 / f5 (:class:`ModalityWeightedFusion`)::

      f = (ae_g.w1 + ae_m.w2 + ae_c.w3).wa + (ve_i.w4 + ve_c.w5).wv + b

- eq. (3), f3 / f6 (:class:`ModalityConcatFusion`), no bias, twice the width::

      f = concat[(ae_g.w1 + ae_m.w2 + ae_c.w3), (ve_i.w4 + ve_c.w5)]

f1-f3 fuse the ``fc1024`` embeddings (width 1024), f4-f6 the ``fc10`` embeddings (width
10, logits before softmax). Any subset of the backbones can be fused: with one modality
(audio only: three embeddings; visual only: two) eq. (1) sums what is there, eq. (2) keeps
its one group, ``(sum_i e_i.w_i).wg + b``, and eq. (3) is that group's sum alone (a
concatenation of one part).

Each builder returns an uncompiled ``keras.Model``; the layers are registered as
Keras-serializable, so a saved fusion model loads without ``custom_objects`` once this module
is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from avsc.config import AUDIO_BACKBONES, BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.errors import ConfigError
from avsc.labels import LABELS
from avsc.models.regularizers import l2_half

__all__ = [
    "WeightedSumFusion",
    "ModalityWeightedFusion",
    "ModalityConcatFusion",
    "FusionSpec",
    "FUSIONS",
    "fusion_layer",
    "build_fusion_model",
    "standardization",
    "distance_score",
    "model_standardization",
    "fusion_logits_model",
    "check_method",
    "check_modalities",
    "modality_of",
]


def _as_list(inputs) -> list:
    if isinstance(inputs, dict):
        raise TypeError("fusion layers take a list of embeddings, one per backbone")
    return list(inputs)


class _FusionBase(keras.layers.Layer):
    """Shared parts: one weight vector ``w_i`` per input embedding (initialised to 1)."""

    def __init__(self, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def _width(self, input_shape) -> int:
        shapes = [tuple(s) for s in input_shape]
        if not shapes:
            raise ValueError(f"{self.name}: needs at least one embedding")
        widths = {s[-1] for s in shapes}
        if len(widths) != 1 or None in widths:
            raise ValueError(f"{self.name}: every embedding must have the same known width, got {shapes}")
        return int(shapes[0][-1])

    def _input_weights(self, n: int, width: int) -> list:
        return [
            self.add_weight(name=f"w{i + 1}", shape=(width,), initializer="ones", regularizer=l2_half(self.l2))
            for i in range(n)
        ]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="avsc")
class WeightedSumFusion(_FusionBase):
    """Eq. (1) (f1 on fc1024, f4 on fc10): ``f = sum_i e_i . w_i + b``.

    Input: a list of n embeddings, each [shape=(batch, d)]. Output: [shape=(batch, d)].
    Weights: ``w1..wn`` [shape=(d,)] (initialised to 1), ``b`` [shape=(d,)] (to 0).
    """

    def build(self, input_shape) -> None:
        width = self._width(input_shape)
        self.input_weights = self._input_weights(len(input_shape), width)
        self.bias = self.add_weight(name="b", shape=(width,), initializer="zeros")

    def call(self, inputs):
        inputs = _as_list(inputs)
        total = inputs[0] * self.input_weights[0]
        for x, w in zip(inputs[1:], self.input_weights[1:], strict=True):
            total = total + x * w
        return total + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


class _GroupedFusion(_FusionBase):
    """Inputs split into modality groups (``groups[i]`` names the group of input i)."""

    def __init__(self, groups: Sequence[str], l2: float = 0.0, **kwargs):
        super().__init__(l2=l2, **kwargs)
        self.groups = tuple(groups)
        if not self.groups:
            raise ValueError("groups must name the modality of every input")
        self.group_names = tuple(dict.fromkeys(self.groups))  # order of first appearance

    def _check(self, input_shape) -> int:
        if len(input_shape) != len(self.groups):
            raise ValueError(f"{self.name}: {len(input_shape)} inputs but {len(self.groups)} groups")
        return self._width(input_shape)

    def _group_sums(self, inputs) -> list:
        """``sum_{i in g} e_i . w_i`` for each group g, in :attr:`group_names` order."""
        sums: dict[str, Any] = {}
        for x, w, g in zip(_as_list(inputs), self.input_weights, self.groups, strict=True):
            sums[g] = x * w if g not in sums else sums[g] + x * w
        return [sums[g] for g in self.group_names]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": list(self.groups)}


@keras.saving.register_keras_serializable(package="avsc")
class ModalityWeightedFusion(_GroupedFusion):
    """Eq. (2) (f2 on fc1024, f5 on fc10): ``f = sum_g (sum_{i in g} e_i . w_i) . w_g + b``.

    With the paper's groups (audio: ae_g, ae_m, ae_c; visual: ve_i, ve_c) this is
    ``(ae_g.w1 + ae_m.w2 + ae_c.w3).wa + (ve_i.w4 + ve_c.w5).wv + b``. One group only
    (audio-only or visual-only fusion): ``(sum_i e_i . w_i) . w_g + b``.

    Input: a list of n embeddings [shape=(batch, d)]. Output: [shape=(batch, d)].
    Weights: ``w1..wn``, one ``w_<group>`` per group (``wa``/``wv`` in the paper) and
    ``b``, each [shape=(d,)].
    """

    def build(self, input_shape) -> None:
        width = self._check(input_shape)
        self.input_weights = self._input_weights(len(input_shape), width)
        self.group_weights = [
            self.add_weight(name=f"w_{g}", shape=(width,), initializer="ones", regularizer=l2_half(self.l2))
            for g in self.group_names
        ]
        self.bias = self.add_weight(name="b", shape=(width,), initializer="zeros")

    def call(self, inputs):
        sums = self._group_sums(inputs)
        total = sums[0] * self.group_weights[0]
        for s, w in zip(sums[1:], self.group_weights[1:], strict=True):
            total = total + s * w
        return total + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="avsc")
class ModalityConcatFusion(_GroupedFusion):
    """Eq. (3) (f3 on fc1024, f6 on fc10): ``f = concat_g [sum_{i in g} e_i . w_i]``, no bias.

    With the paper's groups: ``concat[(ae_g.w1 + ae_m.w2 + ae_c.w3), (ve_i.w4 + ve_c.w5)]``.
    One group only: that group's weighted sum.

    Input: a list of n embeddings [shape=(batch, d)]. Output: [shape=(batch, d * n_groups)],
    audio part first when both modalities are fused.
    """

    def build(self, input_shape) -> None:
        width = self._check(input_shape)
        self.input_weights = self._input_weights(len(input_shape), width)

    def call(self, inputs):
        sums = self._group_sums(inputs)
        return sums[0] if len(sums) == 1 else keras.ops.concatenate(sums, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape[0])[:-1], input_shape[0][-1] * len(self.group_names))


@dataclass(frozen=True)
class FusionSpec:
    """One row of the fusion table: which equation, on which embedding."""

    equation: int  # 1, 2 or 3 (paper, section II-B)
    level: str  # "fc1024" or "fc10"
    layer: type


FUSIONS: dict[str, FusionSpec] = {
    "f1": FusionSpec(1, "fc1024", WeightedSumFusion),
    "f2": FusionSpec(2, "fc1024", ModalityWeightedFusion),
    "f3": FusionSpec(3, "fc1024", ModalityConcatFusion),
    "f4": FusionSpec(1, "fc10", WeightedSumFusion),
    "f5": FusionSpec(2, "fc10", ModalityWeightedFusion),
    "f6": FusionSpec(3, "fc10", ModalityConcatFusion),
}


def check_method(method: str) -> FusionSpec:
    if method not in FUSIONS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    return FUSIONS[method]


def check_modalities(modalities: str) -> tuple[str, ...]:
    if modalities not in MODALITY_SETS:
        raise ConfigError(f"unknown modality set {modalities!r}; choose one of {', '.join(MODALITY_SETS)}")
    return MODALITY_SETS[modalities]


def modality_of(backbone: str) -> str:
    return "audio" if backbone in AUDIO_BACKBONES else "visual"


def fusion_layer(method: str, backbones: Sequence[str], *, l2: float = 0.0) -> keras.layers.Layer:
    """The fusion layer of ``method`` for inputs from ``backbones`` (in that order)."""
    spec = check_method(method)
    if spec.layer is WeightedSumFusion:
        return WeightedSumFusion(l2=l2, name="fusion")
    return spec.layer(groups=[modality_of(b) for b in backbones], l2=l2, name="fusion")


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each column of ``x`` [shape=(n, width)], for a ``Normalization``.

    A column (nearly) constant on these rows — a unit no training clip activates — gets
    variance 1 rather than a tiny one, so a new clip that does activate it is not blown up
    by ``1 / sqrt(tiny)``.

    Returns:
        ``(mean, variance)``, each [shape=(width,)] float32.
    """
    x = np.asarray(x, dtype=np.float64)
    mean, variance = x.mean(axis=0), x.var(axis=0)
    floor = 1e-4 * float(variance.mean()) if variance.size and variance.mean() > 0 else 0.0
    variance = np.where(variance > max(floor, 1e-12), variance, 1.0)
    return mean.astype(np.float32), variance.astype(np.float32)


def distance_score(inputs: Sequence[np.ndarray], standardize: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """How far each row lies from the training data: the mean squared z-score of its inputs.

    ``mean over inputs and columns of ((x - mean) / sqrt(variance))^2`` with the train-split
    statistics of :func:`standardization`: about 1 for a row like the training rows, much
    larger for a row unlike anything trained on (the out-of-distribution check of ``avsc
    predict`` compares it with the val split's quantiles).

    Args:
        inputs: one [shape=(n, width)] array per backbone.
        standardize: one ``(mean, variance)`` pair per backbone.

    Returns:
        [shape=(n,)] float64.
    """
    parts = [
        ((np.asarray(x, np.float64) - m) ** 2 / v).mean(axis=1) for x, (m, v) in zip(inputs, standardize, strict=True)
    ]
    return np.mean(parts, axis=0)


def model_standardization(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The ``(mean, variance)`` pairs a model's ``standardize_<backbone>`` layers hold, in input
    order; None for a model built without standardisation."""
    pairs = []
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        try:
            layer = model.get_layer(f"standardize_{name}")
        except ValueError:
            return None
        pairs.append(
            (
                np.asarray(layer.input_mean, np.float64).reshape(-1),
                np.asarray(layer.input_variance, np.float64).reshape(-1),
            )
        )
    return pairs


def build_fusion_model(
    method: str,
    backbones: Sequence[str],
    width: int,
    *,
    n_classes: int = len(LABELS),
    l2: float = 0.0,
    standardize: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> keras.Model:
    """(Standardisation +) fusion layer + FC(10) + softmax, uncompiled.

    Args:
        method: ``f1`` .. ``f6``.
        backbones: the fused backbones; one ``keras.Input`` per backbone, named after it,
            in this order.
        width: embedding width (1024 for f1-f3 at the paper's settings, 10 for f4-f6).
        standardize: one ``(mean, variance)`` pair [shape=(width,)] per backbone (see
            :func:`standardization`, computed on the train split): each input passes a
            ``keras.layers.Normalization`` named ``standardize_<backbone>`` holding them, so
            the saved model standardises raw embeddings itself. None: inputs go in as they are.

    Returns:
        A model mapping a list (or a dict by backbone name) of [shape=(batch, width)]
        embeddings to [shape=(batch, n_classes)] probabilities. Layers: ``standardize_*``
        (with ``standardize``), ``fusion``, ``fc10`` (Dense), ``probs`` (softmax).
    """
    check_method(method)
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown or not backbones or len(set(backbones)) != len(backbones):
        raise ConfigError(
            f"fusion backbones must be distinct names among {', '.join(BACKBONES)}, "
            f"got {', '.join(backbones) or 'none'}"
        )
    inputs = [keras.Input(shape=(width,), name=b, dtype="float32") for b in backbones]
    x = inputs
    if standardize is not None:
        if len(standardize) != len(backbones):
            raise ValueError(
                f"standardize holds {len(standardize)} (mean, variance) pairs for {len(backbones)} backbones"
            )
        x = [
            keras.layers.Normalization(mean=mean, variance=variance, name=f"standardize_{b}")(t)
            for t, b, (mean, variance) in zip(inputs, backbones, standardize, strict=True)
        ]
    x = fusion_layer(method, backbones, l2=l2)(x)
    x = keras.layers.Dense(n_classes, kernel_regularizer=l2_half(l2), name="fc10", dtype="float32")(x)
    outputs = keras.layers.Activation("softmax", name="probs", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"fusion_{method}")


def fusion_logits_model(model: keras.Model) -> keras.Model:
    """The same fusion model (shared weights) ending at ``fc10``: its logits, before softmax.

    Calibration divides these by the model's temperature before the softmax
    (:mod:`avsc.scoring.calibration`).
    """
    return keras.Model(model.inputs, model.get_layer("fc10").output, name=f"{model.name}_logits")
