"""The five Phase I backbones (paper, section II-A): three audio networks, two visual ones.

Every backbone ends in the same dense block, whose layers the rest of avsc looks up by
name: ``fc1024`` (Dense + ReLU, the first embedding), ``fc10`` (Dense, pre-softmax, the
second embedding) and ``probs`` (softmax, always float32 so mixed precision stays stable).

- Audio (``aud-mel``, ``aud-gam``, ``aud-cqt``): a stored log spectrogram
  ``[shape=(n_bins, frames, 2)]`` -> :class:`Deltas` (spectrogram, delta, delta-delta,
  ``[shape=(n_bins, frames - 4, 6)]``) -> batch normalisation of the input -> a
  residual-inception CNN -> global average pooling -> dense block.
- Visual (``vis-inc``, ``vis-conv``): one video frame ``[shape=(H, W, 3)]``, uint8-valued,
  any stored size -> resize to ``image_size`` -> the network's own preprocessing ->
  ``keras.applications.InceptionV3`` / ``ConvNeXtTiny`` (no top, average pooling) -> dense block.

Builders return uncompiled ``keras.Model`` objects. The custom layers are registered as
Keras-serializable, so ``keras.models.load_model(path)`` needs no ``custom_objects``
(importing :mod:`avsc.models.backbones` is enough).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from avsc.config import BACKBONE_FEATURE, BACKBONES, TrainConfig
from avsc.errors import ConfigError
from avsc.labels import LABELS
from avsc.models.pretrained import find_imagenet_weights, imagenet_download
from avsc.models.regularizers import l2_half


@keras.saving.register_keras_serializable(package="avsc")
class Deltas(layers.Layer):
    """Stack a spectrogram with its delta and delta-delta along the channel axis.

    ``delta[t] = (x[t+1] - x[t-1]) / 2`` in valid mode, applied twice, so the time axis
    loses two frames each side; the spectrogram is cropped to match.

    Input ``[shape=(batch, n_bins, frames, C)]`` -> output
    ``[shape=(batch, n_bins, frames - 4, 3*C)]``, channels ordered
    ``[x_0..x_C-1, delta_0.., delta_delta_0..]``.
    """

    def call(self, inputs):
        delta = (inputs[:, :, 2:, :] - inputs[:, :, :-2, :]) / 2.0
        delta2 = (delta[:, :, 2:, :] - delta[:, :, :-2, :]) / 2.0
        return keras.ops.concatenate([inputs[:, :, 2:-2, :], delta[:, :, 1:-1, :], delta2], axis=-1)

    def compute_output_shape(self, input_shape):
        batch, bins, frames, channels = input_shape
        return (batch, bins, None if frames is None else frames - 4, 3 * channels)


# Faster-moving batch-norm statistics than Keras' 0.99: evaluation after short runs on
# small stores is otherwise dominated by the initial statistics.
_BN_MOMENTUM = 0.9


def _dense_block(x, *, dense_units: int, n_classes: int, dropout: float, l2: float):
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=l2_half(l2), name="fc1024")(x)
    if dropout:
        x = layers.Dropout(dropout, name="fc1024_dropout")(x)
    x = layers.Dense(n_classes, kernel_regularizer=l2_half(l2), name="fc10")(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


def _conv_bn_relu(x, filters: int, kernel: int, l2: float, name: str):
    x = layers.Conv2D(
        filters, kernel, padding="same", use_bias=False, kernel_regularizer=l2_half(l2), name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_inception_block(x, filters: int, l2: float, name: str):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3-3x3, a 5x5 field; 3x3 max-pool-1x1),
    concatenated to ``filters`` channels and added to a (projected) shortcut."""
    width = filters // 4
    b1 = _conv_bn_relu(x, width, 1, l2, f"{name}_b1")
    b3 = _conv_bn_relu(_conv_bn_relu(x, width, 1, l2, f"{name}_b3a"), width, 3, l2, f"{name}_b3b")
    b5 = _conv_bn_relu(x, width, 1, l2, f"{name}_b5a")
    b5 = _conv_bn_relu(b5, width, 3, l2, f"{name}_b5b")
    b5 = _conv_bn_relu(b5, width, 3, l2, f"{name}_b5c")
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = _conv_bn_relu(bp, filters - 3 * width, 1, l2, f"{name}_bp")
    y = layers.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])
    y = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_regularizer=l2_half(l2), name=f"{name}_mix_conv"
    )(y)
    y = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_mix_bn")(y)
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, use_bias=False, kernel_regularizer=l2_half(l2), name=f"{name}_proj_conv")(
            x
        )
        shortcut = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_audio_backbone(
    input_shape: tuple[int, int, int],
    *,
    base_filters: int = 76,
    stages: int = 4,
    blocks_per_stage: int = 2,
    dense_units: int = 1024,
    n_classes: int = len(LABELS),
    dropout: float = 0.2,
    l2: float = 1e-4,
    name: str = "audio_backbone",
) -> keras.Model:
    """Residual-inception classifier over one spectrogram type.

    Args:
        input_shape: ``(n_bins, frames, channels)`` of a stored spectrogram (frames >= 5).
        base_filters: filters of the first stage; each later stage doubles them.
        stages: number of stages; the stem and each stage but the last end with 2x2 max pooling.
        blocks_per_stage: residual-inception blocks per stage.
        dense_units: width of ``fc1024``.

    Example::

        model = build_audio_backbone((128, 715, 2))  # paper preset: ~12 M parameters
    """
    frames = input_shape[1]
    if frames is not None and frames < 5:
        raise ConfigError(f"{name}: a spectrogram needs at least 5 frames for delta-delta, got {frames}")
    inputs = keras.Input(shape=input_shape, name="spectrogram")
    x = Deltas(name="deltas")(inputs)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="input_norm")(x)
    x = _conv_bn_relu(x, base_filters, 3, l2, "stem")
    # Halve both axes before the first block: at the paper's 128 x 711 input this cuts the
    # activation memory of every block by 4 (same parameters).
    x = layers.MaxPooling2D(2, padding="same", name="stem_pool")(x)
    for stage in range(stages):
        filters = base_filters * 2**stage
        for block in range(blocks_per_stage):
            x = _residual_inception_block(x, filters, l2, f"stage{stage + 1}_block{block + 1}")
        if stage < stages - 1:
            x = layers.MaxPooling2D(2, padding="same", name=f"stage{stage + 1}_pool")(x)
            if dropout:
                x = layers.Dropout(dropout / 2, name=f"stage{stage + 1}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="global_dropout")(x)
    outputs = _dense_block(x, dense_units=dense_units, n_classes=n_classes, dropout=dropout, l2=l2)
    return keras.Model(inputs, outputs, name=name)


@dataclass(frozen=True)
class _VisualSpec:
    application: Callable[..., keras.Model]
    min_size: int
    # Maps [0, 255] pixels to what the network expects; None: the network does it itself.
    preprocess: Callable[[Any], Any] | None
    application_kwargs: dict[str, Any]


def _visual_specs() -> dict[str, _VisualSpec]:
    return {
        "inception": _VisualSpec(
            keras.applications.InceptionV3,
            75,
            lambda x: layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_unit")(x),
            {},
        ),
        "convnext": _VisualSpec(keras.applications.ConvNeXtTiny, 32, None, {"include_preprocessing": True}),
    }


def build_visual_backbone(
    kind: str,
    *,
    image_size: int = 224,
    weights: str = "imagenet",
    dense_units: int = 1024,
    n_classes: int = len(LABELS),
    dropout: float = 0.2,
    l2: float = 1e-4,
    name: str | None = None,
) -> keras.Model:
    """An ImageNet network (no top, average pooling) plus the dense block, on one frame.

    Args:
        kind: ``inception`` (InceptionV3) or ``convnext`` (ConvNeXtTiny).
        image_size: side the frame is resized to inside the model (InceptionV3 >= 75,
            ConvNeXtTiny >= 32); frames of any stored size are accepted.
        weights: ``imagenet`` (the local file :func:`avsc.models.pretrained.find_imagenet_weights`
            finds, e.g. baked into the images, else downloaded by Keras), ``none`` (random
            init) or the path of a Keras weights file for the network without its top.

    Raises:
        ConfigError: unknown kind, image too small, a weights path that does not exist, or
            ImageNet weights neither found locally nor downloadable.
    """
    specs = _visual_specs()
    if kind not in specs:
        raise ConfigError(f"unknown visual backbone kind {kind!r}; choose one of {', '.join(specs)}")
    spec = specs[kind]
    if image_size < spec.min_size:
        raise ConfigError(f"{kind}: image_size must be at least {spec.min_size}, got {image_size}")
    if weights == "none":
        base_weights = None
    elif weights == "imagenet":
        base_weights = str(find_imagenet_weights(kind) or "imagenet")
    else:
        if not Path(weights).is_file():
            raise ConfigError(f"{weights}: weights file not found (give an existing file, 'imagenet' or 'none')")
        base_weights = str(weights)
    with imagenet_download(kind) if base_weights == "imagenet" else contextlib.nullcontext():
        base = spec.application(
            include_top=False,
            weights=base_weights,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
            **spec.application_kwargs,
        )
    if kind == "convnext":
        base = depthwise_for_grouped(base)
    if base_weights is None:
        # From scratch (quick preset, tests), Keras' 0.99 leaves half of the initial
        # batch-norm statistics in place after ~70 steps and inference collapses to one
        # class; pretrained statistics are worth keeping, so only random init is changed.
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = _BN_MOMENTUM
    inputs = keras.Input(shape=(None, None, 3), name="frame")
    x = layers.Resizing(image_size, image_size, name="resize")(inputs)
    if spec.preprocess is not None:
        x = spec.preprocess(x)
    x = base(x)
    if dropout:
        x = layers.Dropout(dropout, name="global_dropout")(x)
    if l2:
        # Fine-tuning keeps the same (lambda / 2) ||theta||^2 penalty on the network's kernels;
        # set on the layer (so it is saved) and on the built variable (so it counts now).
        for layer in base.layers:
            for attr in ("kernel", "depthwise_kernel"):
                variable = getattr(layer, attr, None)
                if variable is not None and hasattr(layer, f"{attr}_regularizer"):
                    setattr(layer, f"{attr}_regularizer", l2_half(l2))
                    variable.regularizer = l2_half(l2)
    outputs = _dense_block(x, dense_units=dense_units, n_classes=n_classes, dropout=dropout, l2=l2)
    return keras.Model(inputs, outputs, name=name or f"vis_{kind}")


def depthwise_for_grouped(model):
    """The same network with each depthwise-as-grouped ``Conv2D`` as a ``DepthwiseConv2D``.

    Keras' ConvNeXt writes its 7x7 depthwise convolutions as ``Conv2D(groups=channels)``,
    which TensorFlow runs on the CPU about 30 times slower than the equivalent
    ``DepthwiseConv2D`` (same kernel, axes 2 and 3 swapped; same outputs to float
    rounding). On a 2-core CPU this cuts ConvNeXtTiny on 20 frames of 224x224 from about
    21 to 5 CPU seconds (8 when run op by op). Models without such layers come back
    unchanged; other layers are shared with ``model``, not copied.
    """

    def grouped_is_depthwise(layer) -> bool:
        return (
            isinstance(layer, keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.DepthwiseConv2D)
            and layer.groups > 1
            and layer.groups == layer.filters
            and layer.input.shape[-1] == layer.groups
        )

    def walk(m):
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

    if not any(grouped_is_depthwise(layer) for layer in walk(model)):
        return model

    def clone(layer):
        if not grouped_is_depthwise(layer):
            return layer
        depthwise = keras.layers.DepthwiseConv2D(
            layer.kernel_size,
            strides=layer.strides,
            padding=layer.padding,
            depth_multiplier=1,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
            activation=layer.activation,
            use_bias=layer.use_bias,
            name=layer.name,
            dtype=layer.dtype_policy,
        )
        depthwise.build(layer.input.shape)
        kernel, *rest = layer.get_weights()  # [kh, kw, 1, channels] -> [kh, kw, channels, 1]
        depthwise.set_weights([np.transpose(kernel, (0, 1, 3, 2)), *rest])
        return depthwise

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def _audio(backbone: str, shapes: dict[str, tuple[int, ...]], cfg: TrainConfig) -> keras.Model:
    n_bins, frames, channels = shapes[BACKBONE_FEATURE[backbone]]
    return build_audio_backbone(
        (n_bins, frames, channels),
        base_filters=cfg.audio_base_filters,
        stages=cfg.audio_stages,
        dense_units=cfg.dense_units,
        dropout=cfg.dropout,
        l2=cfg.l2,
        name=backbone.replace("-", "_"),
    )


def _visual(kind: str) -> Callable[[str, dict, TrainConfig], keras.Model]:
    def build(backbone: str, shapes: dict[str, tuple[int, ...]], cfg: TrainConfig) -> keras.Model:
        return build_visual_backbone(
            kind,
            image_size=cfg.image_size,
            weights=cfg.weights,
            dense_units=cfg.dense_units,
            dropout=cfg.dropout,
            l2=cfg.l2,
            name=backbone.replace("-", "_"),
        )

    return build


# Backbone name -> builder(backbone, feature_shapes, train_cfg).
BACKBONE_BUILDERS: dict[str, Callable[[str, dict, TrainConfig], keras.Model]] = {
    "aud-mel": _audio,
    "aud-gam": _audio,
    "aud-cqt": _audio,
    "vis-inc": _visual("inception"),
    "vis-conv": _visual("convnext"),
}
assert set(BACKBONE_BUILDERS) == set(BACKBONES)


def check_backbone(backbone: str) -> str:
    if backbone not in BACKBONE_BUILDERS:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return backbone


def build_backbone(backbone: str, feature_shapes: dict[str, tuple[int, ...]], train_cfg: TrainConfig) -> keras.Model:
    """Build one of the five backbones for the feature shapes of a store.

    Args:
        backbone: one of ``avsc.config.BACKBONES``.
        feature_shapes: feature name -> shape of one clip's array (``FeatureStore.shapes``).
        train_cfg: sizes, dropout, L2, image size and weights.
    """
    from avsc.features.store import required_feature

    check_backbone(backbone)
    required_feature(backbone, feature_shapes)
    return BACKBONE_BUILDERS[backbone](backbone, feature_shapes, train_cfg)


def embedding_model(model: keras.Model) -> keras.Model:
    """The same network with outputs ``[fc1024, fc10]`` (``fc10`` before softmax)."""
    return keras.Model(
        model.input, [model.get_layer("fc1024").output, model.get_layer("fc10").output], name=f"{model.name}_embeddings"
    )
