"""train.py's command line: presets, one-line errors, typed flags, precision, entry points."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch

from facegan.train import config_from_args
from facegan.training.config import TrainConfig
from facegan.training.presets import STRONG

from .conftest import REPO
from .runs import (
    TRAIN_PY,
    _flags,
    _run,
)


def test_config_presets_and_errors(capsys):
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--preset", "strong", "--lr-g", "1e-4",
                               "--ema", "false"])
    assert (cfg.loss, cfg.arch_options["d_spectral_norm"], cfg.lr_g, cfg.ema) == ("hinge", True, 1e-4, False)
    assert STRONG.ema and STRONG.loss == "hinge"
    for argv, needle in [(["--bogus"], "unrecognized arguments: --bogus"),
                         (["--loss", "wgan"], "argument --loss: invalid choice: 'wgan'"),
                         (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'")]:
        with pytest.raises(SystemExit) as e:
            config_from_args(["--data", "d", "--run-dir", "r", *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:  # a list-valued flag is parsed on the command line
        config_from_args(["--data", "d", "--run-dir", "r", "--diffaugment", "color,blur"])
    assert e.value.code == 2 and "argument --diffaugment: unknown 'blur'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size=0: must be at least 1"):
        config_from_args(["--data", "d", "--run-dir", "r", "--batch-size", "0"])[0].validate()
    with pytest.raises(ValueError, match="diffaugment blur: unknown 'blur'"):  # the Python API's str, checked
        TrainConfig(data="d", run_dir="r", max_steps=1, diffaugment="blur").validate()
    with pytest.raises(ValueError, match="ada=true and diffaugment=color: choose one augmentation scheme"):
        config_from_args(["--data", "d", "--run-dir", "r", "--ada", "--diffaugment", "color"])[0].validate()


def test_modern_preset_takes_its_settings_from_the_shards_resolution(synthetic_shards, tmp_path):
    from facegan.training.presets import MODERN_BY_RESOLUTION, preset_config
    cfg, _ = config_from_args(["--data", str(synthetic_shards), "--run-dir", "r", "--preset", "modern",
                               "--r1-gamma", "0.3", "--g-blocks", "2"])  # 32 px shards
    want = MODERN_BY_RESOLUTION[32]
    assert (cfg.arch, cfg.loss, cfg.ada, cfg.ema, cfg.beta1) == ("r3gan", "rpgan", True, True, 0.0)
    assert (cfg.ngf, cfg.batch_size, cfg.r2_gamma, cfg.r1_gamma) == (want["ngf"], want["batch_size"],
                                                                    want["r2_gamma"], 0.3)
    assert cfg.arch_options == {**want.get("arch_options", {}), "g_blocks": 2}
    assert (cfg.lr_g, cfg.lr_d, cfg.reg_every) == (want["lr_g"], want["lr_d"], want["reg_every"])
    assert preset_config("modern", 64).ngf == MODERN_BY_RESOLUTION[64]["ngf"]
    assert preset_config("modern", 64).lr_g == 2e-4  # the paper's where no size-specific value is set
    with pytest.raises(ValueError, match=r"preset modern: no settings for 48 px; it has 32, 64, 128 px"):
        preset_config("modern", 48)
    with pytest.raises(ValueError, match="none: shard folder not found"):  # the shard set's one-line error
        config_from_args(["--data", str(tmp_path / "none"), "--run-dir", "r", "--preset", "modern"])


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match=f"max_kimg={value}: must be a finite number"):
        config_from_args(["--data", "d", "--run-dir", "r", f"--max-kimg={value}"])[0].validate()
    with pytest.raises(ValueError, match=f"r1_gamma={value}: must be a finite number"):
        config_from_args(["--data", "d", "--run-dir", "r", f"--r1-gamma={value}"])[0].validate()


def test_bool_flags_work_bare_like_evaluate_and_sample():
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--cpu", "--hflip", "false"])
    assert cfg.cpu is True and cfg.hflip is False
    cfg, _ = config_from_args(["--data", "d", "--run-dir", "r", "--cpu", "false"])
    assert cfg.cpu is False


def test_auto_precision_is_bf16_on_a_gpu_under_plain_accelerate_launch(monkeypatch):
    """Plain `accelerate launch` exports ACCELERATE_MIXED_PRECISION=no: auto must not read that as
    a request for fp32. The start line says where the precision came from."""
    from facegan.runtime import resolve_precision

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cpu=False) == ("bf16", "auto: GPU with bf16")
    assert resolve_precision("auto", cpu=True) == ("no", "auto: CPU")
    assert resolve_precision("no", cpu=False) == ("no", "--mixed-precision")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_precision("auto", cpu=False) == ("fp16", "launcher: ACCELERATE_MIXED_PRECISION=fp16")


def test_launches_that_run_other_than_asked_are_warned(monkeypatch):
    from types import SimpleNamespace

    from facegan.runtime import process_warnings

    one_cpu_process = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert process_warnings(one_cpu_process) == []
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # accelerate_config.yaml's old num_processes: 8
    [warning] = process_warnings(SimpleNamespace(num_processes=8, device=torch.device("cpu")))
    assert "8 processes on this node but 2 CPU core(s)" in warning
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # What `accelerate launch --cpu --num_processes 2` leaves: a rendezvous address, one process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    [warning] = process_warnings(one_cpu_process)
    assert "asked for several processes but started 1" in warning and "--multi_gpu --num_processes" in warning


def test_cli_one_line_errors(tmp_path, synthetic_shards):
    res = _run([sys.executable, TRAIN_PY, "--data", str(synthetic_shards), "--run-dir", str(tmp_path),
                "--max-stepz", "3"])
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--max-stepz" in res.stderr
    res = _run([sys.executable, TRAIN_PY, "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path),
                "--max-steps", "3"])
    assert res.returncode == 1 and "nowhere: shard folder not found" in res.stderr.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["script", "module", "accelerate"])
def test_entry_points(tmp_path, synthetic_shards, launcher):
    prefix = {"script": [sys.executable, TRAIN_PY],
              "module": [sys.executable, "-m", "facegan.train"],
              "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--cpu",
                             "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                             "--dynamo_backend", "no", TRAIN_PY]}[launcher]
    res = _run(prefix + _flags(synthetic_shards, tmp_path / "run"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "generator exported" in res.stderr
    assert (tmp_path / "run" / "generator.safetensors").exists()


def test_stylegan2_preset_follows_stylegan2_ada_auto_by_resolution():
    """R1 gamma = 0.0002 x res^2 / batch and an EMA half-life of batch x 10 / 32 kimg, as
    StyleGAN2-ADA's "auto" config derives them; its loss, optimizer and lazy R1 interval."""
    from facegan.training.presets import preset_config

    for resolution, batch in ((32, 64), (64, 64), (128, 32)):
        cfg = preset_config("stylegan2", resolution)
        assert cfg.batch_size == batch and cfg.r1_gamma == pytest.approx(0.0002 * resolution**2 / batch)
        assert cfg.ema_kimg == batch * 10 / 32
        cfg.validate()
    assert (cfg.arch, cfg.loss, cfg.reg_every, cfg.beta1, cfg.beta2, cfg.lr_g, cfg.ema) == (
        "stylegan2", "nonsat", 16, 0.0, 0.99, 0.0025, True)


def test_every_command_has_a_console_script_and_version(capsys):
    """pyproject's scripts name every command module, and each answers --version with facegan's."""
    import importlib

    import tomllib

    import facegan

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    commands = ["train", "pack", "evaluate", "sample", "report", "attributes", "project", "edit"]
    assert sorted(scripts) == sorted(f"facegan-{c}" for c in commands)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module == "facegan." + name.removeprefix("facegan-") and func == "main"
        with pytest.raises(SystemExit) as done:
            getattr(importlib.import_module(module), func)(["--version"])
        assert done.value.code == 0
        assert capsys.readouterr().out.strip().endswith(f"(facegan {facegan.__version__})"), name


def test_config_replays_a_run_and_flags_win(tmp_path, synthetic_shards):
    """--config RUN/config.json gives back the config the run wrote (every value, typed: lists as
    tuples, arch options), flags on the command line win, and a bad file is one line."""
    import dataclasses
    import json

    cfg, _ = config_from_args(["--data", str(synthetic_shards), "--run-dir", str(tmp_path / "a"), "--preset", "modern",
                               "--condition", "Smiling", "--g-blocks", "2", "--max-kimg", "3"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict(), indent=1))  # as train() writes RUN/config.json
    replay, _ = config_from_args(["--config", str(path)])
    assert replay == cfg
    changed, _ = config_from_args(["--config", str(path), "--run-dir", str(tmp_path / "b"), "--lr-g", "1e-3"])
    assert changed == dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), lr_g=1e-3)
    for text, message in [("{", "unreadable"), ('{"lr_gg": 1}', "unknown key 'lr_gg'"),
                          ('{"batch_size": "64"}', "batch_size='64': expected int"),
                          ('{"ema": 1}', "ema=1: expected bool")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^--config {path}: .*{message}"):
            config_from_args(["--config", str(path)])
    with pytest.raises(ValueError, match="--preset dcgan with --config"):
        config_from_args(["--config", str(path), "--preset", "dcgan"])
    with pytest.raises(ValueError, match="no such file"):
        config_from_args(["--config", str(tmp_path / "none.json")])


def test_config_arch_options_are_read_as_the_flags_are(tmp_path, synthetic_shards, capsys):
    """--config's arch options: a misspelt one is named (it was dropped without a word), a wrong
    type is refused by --dry-run (it crashed training); JSON nested 100,000 deep is one line."""
    import json

    from facegan.train import main

    cfg, _ = config_from_args(["--data", str(synthetic_shards), "--run-dir", str(tmp_path / "a"), "--arch",
                               "stylegan2", "--g-mapping-layers", "3"])
    saved = cfg.to_dict()
    path = tmp_path / "config.json"
    for options, message in [({"g_mapping_layerz": 2}, "arch_options 'g_mapping_layerz' is not an option of arch "
                              "stylegan2 (its options: g_mapping_layers, "),
                             ({"g_mapping_layers": "two"}, "arch_options g_mapping_layers='two': expected an integer"),
                             ({"g_mixing": 2e400}, "arch_options g_mixing=inf: expected a finite number"),
                             ({"d_batchnorm": True}, "arch_options 'd_batchnorm' is not an option of arch stylegan2")]:
        path.write_text(json.dumps({**saved, "arch_options": options}))
        assert main(["--config", str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"facegan/train.py: error: --config {path}: {message}") and err.count("\n") == 1, err
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["--config", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"facegan/train.py: error: --config {path}: nested too deeply to be a " \
                                      "facegan config\n"
    with pytest.raises(ValueError, match=r"^arch_options g_mapping_layers='two': expected an integer$"):
        dataclasses.replace(cfg, arch_options={"g_mapping_layers": "two"}).validate()  # Python callers too
    path.write_text(json.dumps(saved))  # a good one still replays, and --arch drops the old arch's options
    assert config_from_args(["--config", str(path)])[0] == cfg
    assert config_from_args(["--config", str(path), "--arch", "dcgan"])[0].arch_options == {}


def test_every_section_is_made_of_trainconfig_fields_of_the_same_type():
    """A component's section (evaluation's, upkeep's, saving and resuming's) is filled from the
    TrainConfig fields of the same names: a renamed or retyped field is caught here, not at run time."""
    import typing

    from facegan.training.evaluation import EvalSettings
    from facegan.training.loop import section
    from facegan.training.state import RunSettings
    from facegan.training.upkeep import UpkeepSettings

    flat = typing.get_type_hints(TrainConfig)
    for cls in (EvalSettings, UpkeepSettings, RunSettings):
        for name, kind in typing.get_type_hints(cls).items():
            if name != "config":  # RunSettings.config: the whole config as a checkpoint records it
                assert flat.get(name) == kind, (cls.__name__, name, kind, flat.get(name))
    run = section(RunSettings, STRONG, config=STRONG.to_dict())
    assert (run.keep, run.ema, run.config["lr_g"]) == (STRONG.keep, STRONG.ema, STRONG.lr_g)
    cfg = dataclasses.replace(STRONG, run_dir="r", eval_every=5, metrics=("fid", "kid"), live_report=False)
    assert section(EvalSettings, cfg).metrics == ("fid", "kid") and section(EvalSettings, cfg).eval_every == 5
    assert section(UpkeepSettings, cfg).run_dir == "r" and section(UpkeepSettings, cfg).live_report is False
