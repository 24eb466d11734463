"""The five backbones: output and embedding widths, the Deltas layer, weights handling."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from avsc.config import TrainConfig  # noqa: E402
from avsc.errors import ConfigError  # noqa: E402
from avsc.models.backbones import (  # noqa: E402
    Deltas,
    build_audio_backbone,
    build_backbone,
    build_visual_backbone,
    embedding_model,
)

SHAPES = {"mel": (16, 24, 2), "gam": (16, 24, 2), "cqt": (12, 20, 2), "frames": (2, 40, 40, 3)}
SMALL = TrainConfig(audio_base_filters=8, audio_stages=2, dense_units=48, weights="none", image_size=75)

# backbone -> (train config, one input example's shape)
CASES = {
    "aud-mel": (SMALL, (16, 24, 2)),
    "aud-cqt": (SMALL, (12, 20, 2)),
    "vis-inc": (SMALL, (40, 40, 3)),
    "vis-conv": (TrainConfig(dense_units=48, weights="none", image_size=32), (40, 40, 3)),
}


@pytest.mark.parametrize("backbone", sorted(CASES))
def test_backbone_widths(backbone, rng):
    cfg, shape = CASES[backbone]
    model = build_backbone(backbone, SHAPES, cfg)
    x = rng.uniform(0, 255, size=(3, *shape)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    fc1024, fc10 = embedding_model(model)(x, training=False)
    assert fc1024.shape == (3, cfg.dense_units) and fc10.shape == (3, 10)
    # fc10 is the pre-softmax layer: its softmax is the model's output.
    fc10 = np.asarray(fc10, np.float64)
    soft = np.exp(fc10 - fc10.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), probs, rtol=1e-4, atol=1e-6)


def test_paper_preset_audio_backbone_has_the_papers_size():
    # The paper: 36 M trainable parameters for its three audio networks, about 12 M each.
    # The count does not depend on the spectrogram's size (convolutions and global pooling).
    from avsc.config import load_config

    paper = load_config(preset="paper").train
    model = build_backbone("aud-mel", {"mel": (128, 24, 2)}, paper)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 12_128_992
    assert 35e6 < 3 * trainable < 37e6
    quick = load_config(preset="quick").train
    small = build_backbone("aud-mel", {"mel": (128, 24, 2)}, quick)
    assert sum(int(np.prod(v.shape)) for v in small.trainable_weights) < 100_000  # the quick preset stays small


def test_deltas_match_hand_computation():
    x = np.zeros((1, 2, 7, 1), np.float32)
    x[0, 0, :, 0] = [0, 1, 4, 9, 16, 25, 36]  # t^2: delta = 2t, delta-delta = 2
    x[0, 1, :, 0] = [5, 5, 5, 5, 5, 5, 5]
    out = np.asarray(Deltas()(x))
    assert out.shape == (1, 2, 3, 3)
    np.testing.assert_allclose(out[0, 0, :, 0], [4, 9, 16])
    np.testing.assert_allclose(out[0, 0, :, 1], [4, 6, 8])
    np.testing.assert_allclose(out[0, 0, :, 2], [2, 2, 2])
    np.testing.assert_allclose(out[0, 1], [[5, 0, 0]] * 3)


def test_deltas_match_numpy_reference(rng):
    features = pytest.importorskip("avsc.features.spectrograms")
    if not hasattr(features, "compute_deltas"):
        pytest.skip("avsc.features.spectrograms.compute_deltas not available")
    spec = rng.normal(size=(8, 30, 2)).astype(np.float32)
    expected = np.asarray(features.compute_deltas(spec), np.float32)
    np.testing.assert_allclose(np.asarray(Deltas()(spec[None]))[0], expected, rtol=1e-5, atol=1e-5)


def test_paper_audio_backbone_size():
    model = build_audio_backbone((128, 715, 2), base_filters=64, stages=4)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert 8_000_000 <= trainable <= 16_000_000
    assert model.layers[-1].name == "probs" and model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert model.get_layer("fc1024").units == 1024


def test_l2_is_half_lambda_times_squared_kernels(rng):
    model = build_audio_backbone((8, 12, 2), base_filters=4, stages=1, dense_units=16, l2=0.01)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    expected = 0.005 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_weights_file_is_loaded(tmp_path):
    base = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "convnext_notop.weights.h5"
    base.save_weights(path)
    model = build_visual_backbone("convnext", image_size=32, weights=str(path), dense_units=16)
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    # Same weights (the depthwise kernels held with two axes swapped): same outputs.
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(inner(x, training=False)), np.asarray(base(x, training=False)), rtol=1e-4, atol=1e-4
    )
    assert len(inner.weights) == len(base.weights)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_visual_backbone("convnext", image_size=32, weights="/nonexistent/w.h5"), "not found"),
        (lambda: build_visual_backbone("inception", image_size=40, weights="none"), "at least 75"),
        (lambda: build_visual_backbone("resnet", weights="none"), "unknown visual backbone"),
        (lambda: build_backbone("aud-xyz", SHAPES, SMALL), "unknown backbone"),
    ],
)
def test_bad_settings_raise_clear_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_saved_model_reloads_without_custom_objects(tmp_path, rng):
    model = build_audio_backbone((8, 12, 2), base_filters=4, stages=2, dense_units=16)
    x = rng.normal(size=(2, 8, 12, 2)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_from_scratch_inception_uses_fast_batchnorm_statistics(tmp_path):
    # Random-init InceptionV3 must forget its initial BN statistics within a short run,
    # or a quick-preset model predicts one class at inference; the setting must survive saving.
    model = build_visual_backbone("inception", image_size=75, weights="none", dense_units=16)
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    momenta = {layer.momentum for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    model.save(tmp_path / "vis.keras")
    again = keras.models.load_model(tmp_path / "vis.keras", compile=False)
    base_again = next(layer for layer in again.layers if isinstance(layer, keras.Model))
    assert {layer.momentum for layer in base_again.layers if isinstance(layer, keras.layers.BatchNormalization)} == {
        0.9
    }


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def test_grouped_convolutions_become_depthwise_with_the_same_outputs(rng):
    from avsc.models.backbones import depthwise_for_grouped

    convnext = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    grouped = sum(
        isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
        and layer.groups > 1
        for layer in _all_layers(convnext)
    )
    fast = depthwise_for_grouped(convnext)
    assert grouped == 18  # one 7x7 depthwise convolution per ConvNeXt block (3 + 3 + 9 + 3)
    assert sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in _all_layers(fast)) == grouped
    assert not any(isinstance(layer, keras.layers.Conv2D) and layer.groups > 1 for layer in _all_layers(fast))
    x = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(fast(x, training=False)), np.asarray(convnext(x, training=False)), rtol=1e-4, atol=1e-4
    )
    # The backbone is built with the fast layers (the grouped form is ~30x slower on CPU).
    model = build_visual_backbone("convnext", image_size=32, weights="none", dense_units=16)
    assert not any(isinstance(layer, keras.layers.Conv2D) and layer.groups > 1 for layer in _all_layers(model))
