"""Running as any user, with a read-only root and no network: cache folders, baked ImageNet
weights, and a preprocessing shard that produced nothing.

The containers themselves are exercised in test_containers.py (marker ``container``); these
tests check the same behaviour in this process: a home folder that is a regular file stands in
for an unwritable one (root may write anywhere else), a stand-in weights file for the baked one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Markdown, Metrics
from media_cases import make_text_as_mp4, make_truncated, make_video
from standin_weights import make_standin_weights

from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.manifest import write_manifest
from avsc.errors import ConfigError, DataError
from avsc.features.preprocess import preprocess
from avsc.models import pretrained
from avsc.runtime import is_writable, seed_numba_cache, use_writable_caches

ROOT = Path(__file__).resolve().parents[1]
CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))


# ---------------------------------------------------------------- cache folders


@pytest.fixture
def unwritable_home(tmp_path, monkeypatch):
    """HOME is a regular file: nothing can be created below it, even by root."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # gettempdir() caches its answer
    return home


def test_is_writable_walks_up_to_the_nearest_existing_folder(tmp_path):
    assert is_writable(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("")
    assert not is_writable(tmp_path / "file" / "below")
    assert not is_writable(tmp_path / "file")


def test_unwritable_defaults_move_under_the_temporary_folder(unwritable_home, tmp_path):
    changed = use_writable_caches()
    user = f"avsc-{os.getuid()}"
    assert changed == {
        "NUMBA_CACHE_DIR": str(tmp_path / "tmp" / user / "numba"),
        "MPLCONFIGDIR": str(tmp_path / "tmp" / user / "matplotlib"),
    }
    for name, folder in changed.items():
        assert os.environ[name] == folder and Path(folder).is_dir()


def test_a_set_variable_or_a_writable_default_is_left_alone(unwritable_home, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/chosen")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # writable: matplotlib's default
    assert use_writable_caches() == {}
    assert os.environ["NUMBA_CACHE_DIR"] == "/somewhere/chosen"
    assert "MPLCONFIGDIR" not in os.environ


# ---------------------------------------------------------------- preprocessing


def _row(clip_id: str) -> dict:
    label, city, location, _ = clip_id.split("-")
    return {
        "clip_id": clip_id,
        "video": f"video/{clip_id}.mp4",
        "audio": None,
        "label": label,
        "city": city,
        "location": f"{city}-{location}",
        "split": "train",
        "duration_s": 1.0,
        "fps": 10.0,
        "width": 64,
        "height": 48,
        "audio_channels": 2,
        "audio_rate": 48000,
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    make_video(root / "video" / "park-paris-1-1.mp4", seconds=1.0, width=64, height=48)
    make_video(root / "video" / "tram-paris-2-1.mp4", seconds=1.0, width=64, height=48, tone_hz=900.0)
    make_truncated(root / "video" / "bus-lyon-3-1.mp4", seconds=1.0, width=64, height=48)
    make_text_as_mp4(root / "video" / "metro-lyon-4-1.mp4")
    make_video(root / "video" / "tram-lyon-5-1.mp4", seconds=1.0, width=64, height=48, channels=0)
    bad = ["bus-lyon-3-1", "metro-lyon-4-1", "tram-lyon-5-1"]
    return {
        "root": root,
        "good": write_manifest(
            [_row(c) for c in ("park-paris-1-1", "tram-paris-2-1")], root / "good.parquet", dataset_root=root
        ),
        "mixed": write_manifest([_row(c) for c in ("park-paris-1-1", *bad)], root / "mixed.parquet", dataset_root=root),
        "bad": write_manifest([_row(c) for c in bad], root / "bad.parquet", dataset_root=root),
    }


def test_a_shard_of_only_rejected_clips_raises_with_the_first_reasons(dataset, tmp_path):
    result = preprocess(dataset["bad"], tmp_path / "features", config=CONFIG, progress=False)
    assert result.all_rejected
    with pytest.raises(DataError) as caught:
        result.raise_if_all_rejected(reasons=2)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'features'}: all 3 clips of shard 0/1 were rejected")
    assert "bus-lyon-3-1: " in message and "metro-lyon-4-1: " in message
    assert "tram-lyon-5-1" not in message and "and 1 more" in message
    assert "summary-shard-00000-of-00001.json" in message


def test_a_shard_with_one_good_clip_or_an_earlier_run_passes(dataset, tmp_path):
    mixed = preprocess(dataset["mixed"], tmp_path / "mixed", config=CONFIG, progress=False)
    assert mixed.processed == 1 and len(mixed.rejected) == 3 and not mixed.all_rejected
    mixed.raise_if_all_rejected()
    again = preprocess(dataset["mixed"], tmp_path / "mixed", config=CONFIG, progress=False)
    assert again.processed == 0 and again.skipped_existing == 1 and not again.all_rejected
    again.raise_if_all_rejected()


def test_the_preprocess_step_fails_a_shard_of_rejected_clips(dataset, tmp_path):
    from components import preprocess_shard, resolve_config

    config = Artifact(uri=str(tmp_path / "config"))
    resolve_config.python_func(
        preset="quick", overrides="", config=config, summary=Markdown(uri=str(tmp_path / "summary"))
    )
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "manifest.parquet").write_bytes(Path(dataset["bad"]).read_bytes())
    features, metrics = tmp_path / "features", tmp_path / "metrics.json"
    with pytest.raises(DataError, match="all 3 clips of shard 0/1 were rejected"):
        preprocess_shard.python_func(
            config=config,
            manifest=Dataset(name="manifest", uri=str(manifest)),
            dataset=str(dataset["root"]),
            shard_index=0,
            shard_count=1,
            workers=1,
            output_uri="",
            features=Dataset(name="features", uri=str(features)),
            metrics=Metrics(name="metrics", uri=str(metrics)),
        )


def _preprocess_in_a_new_interpreter(manifest: Path, out: Path, env: dict[str, str]) -> str:
    """Preprocess ``manifest`` (1-s clips, 2 workers) in a fresh Python with ``env``; its stdout."""
    script = (
        "from avsc.config import AudioConfig, FeatureConfig, FrameConfig\n"
        "from avsc.features.preprocess import preprocess\n"
        "config = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))\n"
        f"result = preprocess({str(manifest)!r}, {str(out)!r}, config=config, workers=2, progress=False)\n"
        "print('processed', result.processed, 'rejected', len(result.rejected))\n"
    )
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_preprocess_workers_inherit_a_writable_numba_cache(dataset, tmp_path):
    """In a fresh interpreter whose home is unwritable, two worker processes load librosa
    (numba) and cache into the folder preprocess chose; the shard completes."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"NUMBA_CACHE_DIR", "XDG_CACHE_HOME"}}
    env.update(HOME=str(home), TMPDIR=str(tmp_path / "tmp"))
    assert "processed 2 rejected 0" in _preprocess_in_a_new_interpreter(dataset["good"], tmp_path / "features", env)
    numba_cache = tmp_path / "tmp" / f"avsc-{os.getuid()}" / "numba"
    assert any(numba_cache.rglob("*.nbi")), f"no numba index files under {numba_cache}"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_empty_numba_cache_is_seeded_and_a_used_one_left_alone(tmp_path, monkeypatch):
    seed = tmp_path / "seed"
    (seed / "librosa_dir").mkdir(parents=True)
    (seed / "librosa_dir" / "spectrum.f-1.py311.nbi").write_bytes(b"index")
    (seed / "librosa_dir" / "spectrum.f-1.py311.1.nbc").write_bytes(b"code")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AVSC_NUMBA_CACHE_SEED", raising=False)
    assert not seed_numba_cache()  # no seed named
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("AVSC_NUMBA_CACHE_SEED", str(seed))
    assert seed_numba_cache() and _files(tmp_path / "cache") == _files(seed)
    (tmp_path / "cache" / "librosa_dir" / "spectrum.f-1.py311.nbi").write_bytes(b"newer index")
    assert not seed_numba_cache()  # never overwrites a cache in use
    assert (tmp_path / "cache" / "librosa_dir" / "spectrum.f-1.py311.nbi").read_bytes() == b"newer index"
    monkeypatch.setenv("AVSC_NUMBA_CACHE_SEED", str(tmp_path / "missing"))
    assert not seed_numba_cache()


@pytest.mark.slow
def test_prebuilt_numba_kernels_are_used_by_a_fresh_preprocess(dataset, tmp_path):
    """As the images do: kernels compiled once by warm_up() for a generic CPU, then a fresh
    interpreter with an empty cache and two workers preprocesses a shard without compiling any
    kernel again (numba rewrites a cache index whenever it compiles)."""
    env = {k: v for k, v in os.environ.items() if k not in {"NUMBA_CACHE_DIR", "AVSC_NUMBA_CACHE_SEED"}}
    env.update(NUMBA_CPU_NAME="generic")
    seed, cache = tmp_path / "seed", tmp_path / "cache"
    built = subprocess.run(
        [sys.executable, "-c", "from avsc.features.clip_workers import warm_up; warm_up()"],
        env={
            **env,
            "NUMBA_CACHE_DIR": str(seed),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    prebuilt = _files(seed)
    assert any(name.endswith(".nbi") for name in prebuilt)
    out = _preprocess_in_a_new_interpreter(
        dataset["good"],
        tmp_path / "features",
        {**env, "NUMBA_CACHE_DIR": str(cache), "AVSC_NUMBA_CACHE_SEED": str(seed)},
    )
    assert "processed 2 rejected 0" in out
    assert _files(cache) == prebuilt


# ---------------------------------------------------------------- ImageNet weights


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return make_standin_weights(tmp_path_factory.mktemp("weights"), kinds=("inception",))["inception"]


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv(pretrained.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_weights_folders_are_searched_in_order(no_weights_anywhere, monkeypatch):
    tmp = no_weights_anywhere
    name = pretrained.IMAGENET_WEIGHTS["convnext"].name
    assert pretrained.find_imagenet_weights("convnext") is None
    for folder in (tmp / "home" / ".keras" / "models", tmp / "keras-home" / "models", tmp / "baked"):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"x")
    assert pretrained.find_imagenet_weights("convnext") == tmp / "keras-home" / "models" / name
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp / "baked"))
    assert pretrained.weights_dirs()[0] == tmp / "baked"
    assert pretrained.find_imagenet_weights("convnext") == tmp / "baked" / name
    with pytest.raises(ConfigError, match="unknown_kind"):
        pretrained.find_imagenet_weights("unknown_kind")


def test_published_digests_tell_the_real_file_from_another(standin):
    assert not pretrained.IMAGENET_WEIGHTS["inception"].matches(standin)
    stub = pretrained.WeightsFile("X", "x.h5", "md5", "900150983cd24fb0d6963f7d28e17f72")  # md5("abc")
    path = standin.parent / "abc"
    path.write_bytes(b"abc")
    assert stub.matches(path)


def test_visual_backbone_loads_the_local_imagenet_file_by_path(standin, no_weights_anywhere, monkeypatch):
    import h5py
    import keras

    from avsc.models.backbones import build_visual_backbone

    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(standin.parent))
    model = build_visual_backbone("inception", image_size=75, weights="imagenet", dense_units=8)
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    first_conv = next(layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D))
    with h5py.File(standin, "r") as handle:
        stored = handle[handle.attrs["layer_names"][1]]  # [0] is the input layer
        kernel = np.asarray(stored[stored.attrs["weight_names"][0]])
    np.testing.assert_array_equal(first_conv.get_weights()[0], kernel)


def test_offline_without_the_file_names_the_folders_and_what_to_do(no_weights_anywhere, monkeypatch):
    import keras.src.backend.config
    import keras.src.utils.file_utils

    from avsc.models.backbones import build_visual_backbone

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(no_weights_anywhere / "keras-home"))
    monkeypatch.setattr(keras.src.utils.file_utils, "urlretrieve", offline)
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(no_weights_anywhere / "baked"))
    with pytest.raises(ConfigError) as caught:
        build_visual_backbone("convnext", image_size=32, weights="imagenet", dense_units=8)
    message = str(caught.value)
    assert "convnext_tiny_notop.h5 is not in " + str(no_weights_anywhere / "baked") in message
    assert "Temporary failure in name resolution" in message
    assert "AVSC_WEIGHTS_DIR" in message and "train.weights=none" in message
