"""Config: presets, files, overrides, unknown keys, hashes."""

from __future__ import annotations

import json

import pytest

from avsc.config import (
    Config,
    FeatureConfig,
    config_hash,
    feature_config_from_dict,
    load_config,
    to_dict,
)
from avsc.errors import ConfigError


def test_paper_preset_holds_the_papers_audio_parameters():
    cfg = load_config(preset="paper")
    audio = cfg.features.audio
    assert (audio.sample_rate, audio.n_bins, audio.channels) == (32000, 128, 2)
    assert (audio.win_length, audio.hop_length) == (2560, 448)  # 80 ms, 14 ms at 32 kHz
    assert cfg.features.frames.fps == 2.0 and cfg.features.frames.size == 224
    assert cfg == Config()


def test_quick_preset_is_smaller_than_paper():
    quick, paper = load_config(preset="quick"), load_config(preset="paper")
    assert quick.train.epochs < paper.train.epochs
    assert quick.features.frames.size < paper.features.frames.size
    assert quick.train.weights == "none"
    assert quick.train.image_size >= 75  # InceptionV3's smallest input


def test_overrides_apply_and_none_values_are_ignored():
    cfg = load_config(preset="quick", overrides={"train": {"epochs": 3, "batch_size": None}})
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == load_config(preset="quick").train.batch_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train": {"epoch": 3}}, "unknown setting(s) epoch"),
        ({"features": {"audio": {"hop": 3}}}, "features.audio"),
        ({"train": {"epochs": "ten"}}, "train.epochs: input should be a valid integer"),
        ({"train": {"learning_rate": True}}, "train.learning_rate: input should be a valid number"),
        ({"train": {"epochs": 3.5}}, "train.epochs: input should be a valid integer"),
        ({"nonsense": {}}, "unknown setting(s) nonsense"),
    ],
)
def test_bad_settings_are_rejected_with_their_name(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=overrides)


def test_unknown_preset_is_rejected():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        load_config(preset="fast")


def test_json_and_toml_files_load_and_errors_name_the_file(tmp_path):
    js = tmp_path / "cfg.json"
    js.write_text(json.dumps({"train": {"epochs": 7}, "features": {"frames": {"size": 128}}}))
    toml = tmp_path / "cfg.toml"
    toml.write_text("[train]\nepochs = 9\n[features.audio]\nclip_seconds = 5.0\n")
    assert load_config(js).train.epochs == 7
    assert load_config(js).features.frames.size == 128
    assert load_config(toml, preset="quick").train.epochs == 9
    assert load_config(toml).features.audio.clip_seconds == 5.0

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 1}}))
    with pytest.raises(ConfigError, match=r"bad\.json"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config(broken)


def test_hash_is_stable_and_changes_with_any_setting():
    a = config_hash(FeatureConfig())
    assert a == config_hash(FeatureConfig()) and len(a) == 12
    changed = load_config(overrides={"features": {"audio": {"hop_ms": 10.0}}}).features
    assert config_hash(changed) != a


def test_feature_config_round_trips_through_a_dict():
    cfg = load_config(preset="quick").features
    assert feature_config_from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_set_arguments_are_typed_toml_values_and_plain_strings():
    cfg = load_config(
        preset="quick",
        overrides=[
            "features.audio.frames=309",
            "train.weights=imagenet",
            "train.learning_rate=1e-3",
            "fusion.seed = 7",
        ],
    )
    assert cfg.features.audio.frames == 309
    assert cfg.train.weights == "imagenet" and cfg.train.learning_rate == 1e-3 and cfg.fusion.seed == 7
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(overrides=["train.epochs"])
    with pytest.raises(ConfigError, match=r"train.epochs: input should be a valid integer"):
        load_config(overrides=["train.epochs=many"])


def test_overrides_as_toml_text_json_text_and_dotted_mappings_agree():
    expected = load_config(preset="quick", overrides={"train": {"epochs": 2}, "features": {"audio": {"frames": 50}}})
    assert load_config(preset="quick", overrides="train.epochs = 2\n[features.audio]\nframes = 50") == expected
    assert load_config(preset="quick", overrides='{"train": {"epochs": 2}, "features.audio.frames": 50}') == expected
    assert load_config(preset="quick", overrides={"train.epochs": 2, "features.audio.frames": 50}) == expected
    with pytest.raises(ConfigError, match="neither a TOML table nor a JSON object"):
        load_config(overrides="[train")


def test_the_default_preset_is_the_papers():
    from avsc.config import DEFAULT_PRESET

    assert DEFAULT_PRESET == "paper" and load_config() == Config()
