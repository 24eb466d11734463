"""A training preempted mid-epoch (SIGTERM, as Kubernetes sends) saves, stops, and resumes at
the next step with the same result as a training never stopped."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from features_factory import make_feature_store  # noqa: E402

from avsc.cli import main  # noqa: E402
from avsc.config import load_config  # noqa: E402
from avsc.training import checkpoints as ck  # noqa: E402
from avsc.training.backbone import train_backbone  # noqa: E402

# 60 train clips in batches of 8: 8 steps an epoch (the last one of 4 clips).
SETTINGS = ["train.epochs=1", "train.batch_size=8", "train.audio_stages=2", "train.seed=7"]
CONFIG = load_config(preset="quick", overrides=SETTINGS).train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_feature_store(tmp_path_factory.mktemp("features"), features=("mel",))


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train_backbone("aud-mel", [store], out / "model", config=CONFIG, progress=False)
    return result, keras.models.load_model(out / "model" / "model.keras", compile=False).get_weights()


def _sigterm_at(monkeypatch, epoch: int, step: int) -> None:
    """Send this process SIGTERM when training reaches ``step`` (1-based) of ``epoch``."""
    real = ck.StepCheckpoints.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch + 1 == epoch and self.first_step + batch + 1 == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch, logs)

    monkeypatch.setattr(ck.StepCheckpoints, "on_train_batch_end", on_train_batch_end)


def test_sigterm_mid_epoch_saves_and_the_resumed_run_ends_as_one_never_stopped(
    store, uninterrupted, tmp_path, monkeypatch, capsys
):
    expected, expected_weights = uninterrupted
    model_dir, checkpoints = tmp_path / "model", tmp_path / "checkpoints"
    _sigterm_at(monkeypatch, epoch=1, step=3)
    command = [
        "train",
        "aud-mel",
        str(store),
        "-o",
        str(model_dir),
        "--checkpoints",
        str(checkpoints),
        "--preset",
        "quick",
        "--quiet",
        *(f"--set={setting}" for setting in SETTINGS),
    ]
    assert main(command) == 143
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("avsc train")]
    assert said == [
        (
            f"avsc train: stopped by SIGTERM in epoch 1, after step 3; checkpoint saved in {checkpoints}: "
            "run the same command again to resume"
        )
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives as long as the training
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["epoch"] == 0 and state["in_epoch"]["epoch"] == 1 and state["in_epoch"]["step"] == 3
    assert [p.name for p in checkpoints.glob("*.keras")] == ["step-0001-000003.keras"]
    assert not (model_dir / "model.keras").exists()

    monkeypatch.undo()
    resumed = train_backbone("aud-mel", [store], model_dir, config=CONFIG, checkpoints=checkpoints, progress=False)
    assert resumed.epochs_run == 1
    weights = keras.models.load_model(model_dir / "model.keras", compile=False).get_weights()
    for got, want in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(resumed.history, expected.history, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["val_log_loss"] == pytest.approx(want["val_log_loss"], rel=1e-5)
    assert sorted(p.name for p in checkpoints.glob("*.keras")) == sorted(
        {"epoch-0001.keras", "best-epoch-0001.keras"}
    )  # the step file is gone


def test_a_checkpoint_every_n_steps_resumes_after_a_kill(store, uninterrupted, tmp_path, monkeypatch):
    """What SIGKILL leaves (no handler runs): the last periodic checkpoint, from which the run
    resumes and still ends as one never stopped."""
    expected, expected_weights = uninterrupted
    checkpoints = tmp_path / "checkpoints"

    class Killed(BaseException):
        pass

    real = ck.StepCheckpoints.on_train_batch_end

    def killed_at_epoch_1_step_6(self, batch, logs=None):
        real(self, batch, logs)
        if self.epoch == 0 and batch + 1 == 6:
            raise Killed  # the process is gone: nothing after this point runs

    monkeypatch.setattr(ck.StepCheckpoints, "on_train_batch_end", killed_at_epoch_1_step_6)
    with pytest.raises(Killed):
        train_backbone(
            "aud-mel",
            [store],
            tmp_path / "model",
            config=CONFIG,
            checkpoints=checkpoints,
            progress=False,
            checkpoint_every_steps=4,
        )
    state = json.loads((checkpoints / "state.json").read_text())
    assert state["epoch"] == 0 and state["in_epoch"]["step"] == 4  # the last interval (steps 5-6) is lost

    monkeypatch.undo()
    resumed = train_backbone(
        "aud-mel",
        [store],
        tmp_path / "model",
        config=CONFIG,
        checkpoints=checkpoints,
        progress=False,
        checkpoint_every_steps=4,
    )
    assert resumed.epochs_run == 1
    weights = keras.models.load_model(tmp_path / "model" / "model.keras", compile=False).get_weights()
    for got, want in zip(weights, expected_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [e["loss"] for e in resumed.history] == pytest.approx([e["loss"] for e in expected.history], rel=1e-5)
