"""Checkpoints at a durable location: fusion training resumes exactly; finished fusions are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from embeddings_factory import make_embeddings  # noqa: E402
from s3_server import s3_env, s3_server, s3_store  # noqa: F401, E402  (fixtures)

from avsc.config import load_config  # noqa: E402
from avsc.errors import ConfigError  # noqa: E402
from avsc.storage import locations  # noqa: E402
from avsc.training import fusion, selection_loop  # noqa: E402
from avsc.training.checkpoints import Checkpoints  # noqa: E402
from avsc.training.state import TrainingState  # noqa: E402

# One val evaluation (and checkpoint) per epoch, as the test counts them.
CONFIG = load_config(preset="quick", overrides={"fusion": {"epochs": 8, "eval_every": 1}}).fusion


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    return make_embeddings(
        tmp_path_factory.mktemp("emb") / "embeddings", width=16, per_class={"train": 8, "val": 3, "test": 3}
    )


class _Preempted(Exception):
    pass


def test_an_interrupted_fusion_resumes_with_the_same_history(embeddings, tmp_path, monkeypatch):
    whole = fusion.train_fusion(embeddings, tmp_path / "whole", method="f4", config=CONFIG, progress=False)

    real = selection_loop.calibrate  # called once per epoch, after its training
    calls = {"n": 0}

    def preempt_in_epoch_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise _Preempted
        return real(*args, **kwargs)

    ckpt = tmp_path / "ckpt"
    monkeypatch.setattr(selection_loop, "calibrate", preempt_in_epoch_6)
    with pytest.raises(_Preempted):
        fusion.train_fusion(
            embeddings,
            tmp_path / "a",
            method="f4",
            config=CONFIG,
            checkpoints=ckpt,
            checkpoint_every_s=0,
            progress=False,
        )
    monkeypatch.setattr(selection_loop, "calibrate", real)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 5 and sorted(p.name for p in ckpt.iterdir()) == ["state-epoch-00005.npz", "state.json"]
    resumed = fusion.train_fusion(
        embeddings, tmp_path / "b", method="f4", config=CONFIG, checkpoints=ckpt, progress=False
    )
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in resumed.history]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in whole.history]
    assert resumed.best_epoch == whole.best_epoch and resumed.val_accuracy == whole.val_accuracy
    assert resumed.temperature == whole.temperature  # the chosen epoch's calibration came through
    with pytest.raises(ConfigError, match="another run"):
        fusion.train_fusion(embeddings, tmp_path / "c", method="f5", config=CONFIG, checkpoints=ckpt, progress=False)


def test_finished_fusions_are_kept_and_copied_by_a_new_process(s3_env, embeddings, tmp_path, monkeypatch):
    from avsc.storage.sync import push_dir

    push_dir(embeddings, s3_env.uri("emb"), progress=False)
    ckpt = s3_env.uri("ckpt/fusion")
    out = s3_env.uri("runs/r1/fusion")
    first = fusion.train_all_fusions(
        s3_env.uri("emb"),
        out,
        config=CONFIG,
        methods=("f1",),
        modality_sets=("audio", "visual"),
        checkpoints=ckpt,
        progress=False,
    )
    assert [r.out_dir for r in first] == [f"{out}/f1-audio", f"{out}/f1-visual"]
    assert "runs/r1/fusion/f1-visual/fusion.json" in s3_env.keys("runs/")
    assert "ckpt/fusion/f1-audio/done/fusion.json" in s3_env.keys("ckpt/")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fusion was trained again")

    monkeypatch.setattr(fusion, "train_fusion", no_training)
    again = fusion.train_all_fusions(
        s3_env.uri("emb"),
        tmp_path / "empty",
        config=CONFIG,
        methods=("f1",),
        modality_sets=("audio", "visual"),
        checkpoints=ckpt,
        progress=False,
    )
    assert [r.skipped for r in again] == [True, True]
    assert [r.val_accuracy for r in again] == [r.val_accuracy for r in first]
    assert (tmp_path / "empty" / "f1-audio" / "model.keras").is_file()


def test_checkpoint_files_are_replaced_not_accumulated(tmp_path):
    ckpt = Checkpoints(tmp_path / "c")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(1)
    for epoch in (1, 2):
        ckpt.save_state(
            TrainingState(resume_key="key", epoch=epoch, history=({"epoch": epoch},), best_epoch=epoch),
            model,
            optimizer,
            rng,
            None,
        )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["state-epoch-00002.npz", "state.json"]
    other = np.random.default_rng(99)
    state, best_weights = ckpt.restore_state("key", model, optimizer, other)
    assert state.epoch == 2 and best_weights is None
    assert other.random() == rng.random() and list(state.history) == [{"epoch": 2}]
    assert locations.read_json(str(tmp_path / "c" / "state.json"))["epoch"] == 2


def test_evaluate_reads_fusions_and_writes_its_report_on_the_store(s3_env, embeddings):
    from avsc.evaluation.evaluate import evaluate
    from avsc.storage.sync import push_dir

    push_dir(embeddings, s3_env.uri("emb"), progress=False)
    fusion.train_all_fusions(
        s3_env.uri("emb"),
        s3_env.uri("fusion"),
        config=CONFIG,
        methods=("f4",),
        modality_sets=("audio",),
        progress=False,
    )
    metrics = evaluate([s3_env.uri("fusion")], s3_env.uri("report"), embeddings=s3_env.uri("emb"))
    assert [(r.method, r.modalities) for r in metrics.results] == [("f4", "audio")]
    keys = s3_env.keys("report/")
    assert {"report/metrics.json", "report/report.html"} <= set(keys)
    assert locations.read_json(s3_env.uri("report/metrics.json"))["best"] == metrics.to_dict()["best"]


def test_a_state_of_an_older_avsc_is_refused_naming_it(tmp_path):
    from avsc.errors import DataError

    (tmp_path / "state.json").write_text(
        json.dumps({"resume_key": "key", "epoch": 2, "arrays": "x.npz", "history": [], "rng": {}, "best": {}})
    )
    with pytest.raises(DataError, match=r"state\.json: not a avsc-training-state record .*delete these checkpoints"):
        Checkpoints(tmp_path).read_state()
    state = TrainingState(resume_key={"settings": {}}, epoch=1, best_key=(-1.0, 0.5))
    Checkpoints(tmp_path).write_state(state)
    assert Checkpoints(tmp_path).read_state() == state
