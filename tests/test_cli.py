"""The ``avsc`` command line: help texts, settings through --preset/--config/--set, exit statuses,
a missing TensorFlow extra, and how cheap ``import avsc`` and ``avsc --help`` are."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import avsc
from avsc import cli
from avsc.cli import COMMANDS, build_parser, main, options
from avsc.config import DEFAULT_PRESET, config_hash, load_config

SRC = Path(avsc.__file__).resolve().parents[1]
SETTINGS_COMMANDS = ("preprocess", "train", "fuse")
TENSORFLOW_COMMANDS = {
    "train": ["train", "aud-mel", "features", "-o", "model"],
    "embed": ["embed", "model", "features", "-o", "e.parquet"],
    "fuse": ["fuse", "embeddings", "--method", "f1", "-o", "fusion"],
    "predict": ["predict", "v.mp4", "--bundle", "bundle"],
}
HEAVY = ("tensorflow", "keras", "librosa", "numba", "kfp", "pandas", "pyarrow", "sklearn", "matplotlib")


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports avsc from this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every (command path, parser) below ``parser``, e.g. (("data", "pull"), <parser>)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


# ---------------------------------------------------------------- registration and help


def test_every_module_in_the_list_is_a_command_named_after_it():
    names = [path[0] for path, _ in _commands(build_parser()) if len(path) == 1]
    assert names == [name.replace("_", "-") for name in COMMANDS]
    for name in COMMANDS:
        assert (SRC / "avsc" / "cli" / f"{name}.py").is_file()


def test_a_new_command_is_one_module_and_one_list_entry(monkeypatch, capsys):
    module = types.ModuleType("avsc.cli.hello")

    def register(subparsers):
        parser = options.add_command(subparsers, "hello", help="say hello", description="Greets.")
        parser.add_argument("--name", default="world", help="who to greet")
        parser.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)

    module.register = register
    monkeypatch.setitem(sys.modules, "avsc.cli.hello", module)
    monkeypatch.setattr(cli, "COMMANDS", [*COMMANDS, "hello"])
    assert main(["hello", "--name", "avsc"]) == 0
    assert capsys.readouterr().out == "hello avsc\n"
    assert main(["hello", "--help"]) == 0
    assert "(default: world)" in capsys.readouterr().out


def test_every_help_states_the_exit_statuses_and_every_option_its_default():
    for path, parser in _commands(build_parser()):
        text = parser.format_help()
        assert "exit status:" in text, path
        for code in ("0", "1", "2", "130"):
            assert f"\n  {code:<4} " in text, (path, code)
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (path, action.dest)
            if action.option_strings and not action.required and action.nargs != 0:
                assert "default" in formatter._get_help_string(action), (path, action.option_strings)


def test_settings_commands_default_to_the_paper_preset_and_take_config_and_set():
    assert DEFAULT_PRESET == "paper"
    commands = dict(_commands(build_parser()))
    for name in SETTINGS_COMMANDS:
        text = " ".join(commands[(name,)].format_help().split())
        assert "(default: paper)" in text, name
        for flag in ("--preset", "--config FILE", "--set SECTION.KEY=VALUE"):
            assert flag in text, (name, flag)
        assert "usage error (an unknown option or a bad value) also a bad --set or --config file" in text
    for name in TENSORFLOW_COMMANDS:
        assert "Needs Keras on TensorFlow" in " ".join(commands[(name,)].format_help().split()), name
    assert "Needs Keras on TensorFlow" not in commands[("preprocess",)].format_help()


def test_predict_and_preprocess_document_their_failure_status():
    commands = dict(_commands(build_parser()))
    predict = " ".join(commands[("predict",)].format_help().split())
    assert "also when any video could not be classified" in predict
    preprocess = " ".join(commands[("preprocess",)].format_help().split())
    assert "also when every clip this run tried was rejected" in preprocess


# ---------------------------------------------------------------- one settings path


def test_shorthands_config_file_and_set_resolve_in_order(tmp_path):
    config_file = tmp_path / "fusion.toml"
    config_file.write_text("[fusion]\nepochs = 7\nbatch_size = 8\nseed = 5\n")
    args = build_parser().parse_args(
        [
            "fuse",
            "emb",
            "--method",
            "f1",
            "-o",
            "out",
            "--preset",
            "quick",
            "--config",
            str(config_file),
            "--epochs",
            "3",
            "--learning-rate",
            "0.5",
            "--set",
            "fusion.epochs=2",
            "--set",
            "fusion.l2=0.0",
        ]
    )
    config = options.resolve_config(args)
    assert config == load_config(
        config_file, preset="quick", overrides={"fusion.epochs": 2, "fusion.learning_rate": 0.5, "fusion.l2": 0.0}
    )
    assert (config.fusion.epochs, config.fusion.batch_size, config.fusion.seed) == (2, 8, 5)
    assert config.train == load_config(preset="quick").train

    plain = options.resolve_config(build_parser().parse_args(["train", "aud-mel", "f", "-o", "m"]))
    assert plain == load_config(preset=DEFAULT_PRESET)


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    """`avsc demo-data` (3 one-second clips of one scene) and `avsc ingest`."""
    root = tmp_path_factory.mktemp("cli")
    dataset, manifest = root / "demo", root / "manifest.parquet"
    assert (
        main(
            [
                "demo-data",
                str(dataset),
                "--classes",
                "1",
                "--clips-per-class",
                "3",
                "--locations-per-class",
                "3",
                "--seconds",
                "1",
                "--width",
                "32",
                "--height",
                "32",
                "--fps",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["ingest", str(dataset), "-o", str(manifest), "--quiet"]) == 0
    return manifest


def test_set_reaches_the_features_and_their_recorded_config(demo_manifest, tmp_path, capsys):
    from avsc.features.store import FeatureStore

    out = tmp_path / "features"
    settings = [
        "--set",
        "features.audio.clip_seconds=1.0",
        "--set",
        "features.frames.size=32",
        "--set",
        "features.audio.frames=309",
    ]
    assert main(["preprocess", str(demo_manifest), "-o", str(out), "--preset", "quick", *settings, "--quiet"]) == 0
    assert "mel 128x309x2" in capsys.readouterr().out
    store = FeatureStore.open(out)
    expected = load_config(preset="quick", overrides=[s for s in settings if s != "--set"]).features
    assert store.config.audio.frames == 309 and store.config == expected
    assert store.config_hash == config_hash(expected)
    assert store.shapes["mel"] == (128, 309, 2)
    clip_id = store.clips()["clip_id"][0]
    assert [store.read_clip(clip_id, name).shape[1] for name in ("mel", "gam", "cqt")] == [309, 309, 309]


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--set", "features.audio.framez=309"], "framez"),
        (["--set", "features.audio.frames=many"], "features.audio.frames"),
        (["--set", "features.audio.frames"], "expected section.key=value"),
        (["--preset", "quick", "--config", "missing.toml"], "missing.toml"),
        (["--shard", "3/2"], "shard"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_setting(demo_manifest, tmp_path, capsys, argv, named):
    out = tmp_path / "features"
    assert main(["preprocess", str(demo_manifest), "-o", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avsc preprocess: error: ") and named in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_argparse_errors_and_missing_commands_exit_2(capsys):
    assert main(["preprocess", "--workers", "0", "m.parquet", "-o", "f"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["fuse", "emb", "-o", "out", "--method", "f9"]) == 2
    assert main(["data"]) == 2
    assert main([]) == 2
    assert "usage: avsc" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"avsc {avsc.__version__}"


def test_fuse_prints_each_result_once_and_the_library_only_logs(tmp_path, capsys, caplog):
    from embeddings_factory import make_embeddings

    embeddings = make_embeddings(
        tmp_path / "emb", width=8, per_class={"train": 2, "val": 1, "test": 1}, backbones=("vis-inc", "vis-conv")
    )
    argv = [
        "fuse",
        str(embeddings),
        "--method",
        "f4",
        "--modalities",
        "visual",
        "-o",
        str(tmp_path / "f"),
        "--preset",
        "quick",
        "--epochs",
        "1",
    ]
    with caplog.at_level("DEBUG"):
        assert main(["-v", *argv]) == 0  # -v: the library's debug messages too
    captured = capsys.readouterr()
    line = "f4 visual: best step 1"
    assert (captured.out + captured.err).count(line) == 1 and captured.out.startswith(line)
    assert any(
        "f4 visual: best step 1 of 1" in r.getMessage() for r in caplog.records if r.name == "avsc.training.fusion"
    )


# ---------------------------------------------------------------- data and runtime errors


def test_a_missing_input_exits_1_naming_it(tmp_path, capsys):
    manifest = tmp_path / "nowhere" / "manifest.parquet"
    assert main(["preprocess", str(manifest), "-o", str(tmp_path / "f"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"avsc preprocess: error: {manifest}: manifest not found")
    assert "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "no-fusion"), "-o", str(tmp_path / "r")]) == 1
    assert "no-fusion" in capsys.readouterr().err


def test_runtime_errors_interrupts_and_missing_extras_map_to_their_status(capsys):
    args = argparse.Namespace(command="x")

    def raising(exc):
        def handler(args):
            raise exc

        return handler

    assert cli._run(raising(PermissionError(13, "Permission denied", "out/model.keras")), args) == 1
    assert "avsc x: error: [Errno 13] Permission denied: 'out/model.keras'" in capsys.readouterr().err
    assert cli._run(raising(KeyboardInterrupt()), args) == 130
    assert "interrupted; finished work is kept" in capsys.readouterr().err
    assert cli._run(raising(ModuleNotFoundError("No module named 'keras'", name="keras")), args) == 1
    assert capsys.readouterr().err.strip() == f"avsc x: error: {options.TENSORFLOW_MISSING}"
    with pytest.raises(ModuleNotFoundError):  # another missing module is a bug, not a user's problem
        cli._run(raising(ModuleNotFoundError("No module named 'pandas'", name="pandas")), args)


# Makes importing TensorFlow or Keras fail as on an install without the cpu/gpu extra.
_WITHOUT_TENSORFLOW = """
import importlib.abc, sys

class WithoutTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, WithoutTensorFlow())
from avsc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", sorted(TENSORFLOW_COMMANDS))
def test_commands_that_need_tensorflow_say_which_extra_to_install(name, tmp_path):
    done = _python(_WITHOUT_TENSORFLOW, *TENSORFLOW_COMMANDS[name], cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        f"avsc {name}: error: this command needs TensorFlow: pip install 'avsc[cpu]' or 'avsc[gpu]'"
    )
    assert done.stdout == ""
    helped = _python(_WITHOUT_TENSORFLOW, name, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "exit status:" in helped.stdout


def test_a_jax_backend_without_jax_says_which_extra_to_install(tmp_path):
    hide_jax = _WITHOUT_TENSORFLOW.replace('("tensorflow", "keras")', '("jax", "jaxlib")')
    env = dict(
        os.environ, KERAS_BACKEND="jax", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_jax, *TENSORFLOW_COMMANDS["train"]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "avsc train: error: this command with KERAS_BACKEND=jax needs JAX: pip install 'avsc[jax]'"
    )


# ---------------------------------------------------------------- cheap imports


def test_import_avsc_and_every_help_import_no_heavy_library():
    code = f"""
import contextlib, io, json, sys
import avsc
after_import = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
names = sorted(avsc.__all__)
from avsc.cli import COMMANDS, main
with contextlib.redirect_stdout(io.StringIO()) as text:
    codes = [main(['--help'])] + [main([name.replace('_', '-'), '--help']) for name in COMMANDS]
after_help = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"import": after_import, "help": after_help, "codes": codes, "names": names}}))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["import"] == [] and result["help"] == []
    assert set(result["codes"]) == {0}
    assert {"load_config", "preprocess", "train_backbone", "Predictor", "__version__"} <= set(result["names"])


def test_the_flat_api_names_the_library_entry_points():
    import avsc.features.preprocess
    import avsc.training.fusion

    assert avsc.preprocess is avsc.features.preprocess.preprocess
    assert avsc.train_all_fusions is avsc.training.fusion.train_all_fusions
    for name in avsc.__all__:
        assert getattr(avsc, name) is not None, name
    assert "load_config" in dir(avsc)
