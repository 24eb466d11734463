"""The memory check before a local run or a training: estimates from the settings, measured
peaks (docs/training.md) within their stated margin, one line naming the step and the fix."""

from __future__ import annotations

import pytest

import pipeline
from avsc.config import BACKBONES, load_config
from avsc.errors import ResourceError
from avsc.preflight import check_local_run, check_training, training_bytes

GIB = 1024**3
MIB = 1024**2

# Peak RSS measured with bench/train.py (one process each, CPU, float32): (preset, backbone,
# batch size) -> bytes. See docs/training.md, "Memory".
MEASURED = {
    ("quick", "aud-mel", 16): 1280 * MIB,
    ("quick", "vis-inc", 16): 1899 * MIB,
    ("quick", "vis-conv", 16): 1917 * MIB,
    ("paper", "aud-mel", 8): 3970 * MIB,
    ("paper", "aud-mel", 32): int(11.19e9),  # sampled during its first steps (docs/training.md)
    ("paper", "vis-inc", 8): 2238 * MIB,
    ("paper", "vis-inc", 32): 3832 * MIB,
    ("paper", "vis-conv", 8): 3137 * MIB,
    ("paper", "vis-conv", 32): 9727 * MIB,
}


@pytest.mark.parametrize("preset, backbone, batch", sorted(MEASURED))
def test_estimates_are_near_the_measured_peaks(preset, backbone, batch):
    config = load_config(preset=preset, overrides={"train": {"batch_size": batch}})
    # The benchmark holds no training stream; the estimate does (its shuffle buffer).
    from avsc.preflight import SHUFFLE_BUFFER, _audio_input

    estimate = training_bytes(backbone, config)
    if backbone.startswith("aud"):
        estimate -= SHUFFLE_BUFFER * _audio_input(config) * 2
    else:
        size = config.features.frames.size
        estimate -= SHUFFLE_BUFFER * size * size * 3 / 7
    assert estimate == pytest.approx(MEASURED[preset, backbone, batch], rel=0.25)


def test_the_paper_preset_does_not_fit_24_gib_two_at_a_time_and_says_what_to_do():
    paper = load_config(preset="paper")
    with pytest.raises(ResourceError) as caught:
        check_local_run(paper, parallel_trainings=2, limit=24 * GIB)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("not enough memory for step 'Train backbone': 2 at once")
    assert "this machine has 25.8 GB (23.2 GB usable)" in message and "--preset quick" in message
    assert "--parallel 1" in message  # one at a time fits
    quick = load_config(preset="quick")
    assert check_local_run(quick, parallel_trainings=2, limit=24 * GIB) < 8 * GIB


def test_a_training_that_cannot_fit_is_refused_with_a_smaller_batch_size_to_try():
    paper = load_config(preset="paper")
    with pytest.raises(
        ResourceError,
        match=r"train aud-mel: needs ~\d+\.\d GB at batch size 32; "
        r"this machine has 4\.3 GB \(3\.9 GB usable\)\. "
        r".*--batch-size \(e\.g\. 8\)",
    ):
        check_training("aud-mel", paper, limit=4 * GIB)
    assert check_training("aud-mel", load_config(preset="quick"), limit=4 * GIB) < 4 * GIB
    # Larger batches and wider inputs need more.
    bigger = load_config(preset="paper", overrides={"train": {"batch_size": 64}})
    for backbone in BACKBONES:
        assert training_bytes(backbone, bigger) > training_bytes(backbone, paper)


def test_a_local_paper_run_stops_before_any_work_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("avsc.runtime.memory_limit", lambda *a, **k: 24 * GIB)
    out = tmp_path / "out"
    assert pipeline.main(["run", "--local", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(
        "pipeline.py run: error: not enough memory for step 'Train backbone'"
    )
    assert not out.exists()  # no demo data, no step


def test_avsc_train_refuses_a_training_that_cannot_fit_before_tensorflow_loads(tmp_path, monkeypatch, capsys):
    from features_factory import make_feature_store

    from avsc.cli import main

    store = make_feature_store(tmp_path / "features", per_class={"train": 1, "val": 1, "test": 0})
    monkeypatch.setattr("avsc.runtime.memory_limit", lambda *a, **k: 1 * GIB)
    monkeypatch.setattr(
        "avsc.training.backbone.train_backbone",
        lambda *a, **k: pytest.fail("training started without the memory check"),
    )
    code = main(["train", "vis-inc", str(store), "-o", str(tmp_path / "model"), "--preset", "paper"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert err.startswith("avsc train: error: not enough memory to train vis-inc: needs ~") and "--batch-size" in err
    assert not (tmp_path / "model").exists()
