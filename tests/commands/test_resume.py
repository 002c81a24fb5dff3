"""Issue 29 (2, 5): `--resume` continues from the newest sound checkpoint, only the same run, and keeps its logs."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch

from lit_pref.callbacks.resume import RUN_KEY
from lit_pref.commands.resume import CheckpointWarning, changed_settings, check_same_run
from lit_pref.errors import ConfigError
from tests.conftest import DATA
from tests.helpers import fit_cli

CSV = (
    "--trainer.logger.class_path",
    "lightning.pytorch.loggers.CSVLogger",
    "--trainer.log_every_n_steps",
    "1",
)


def checkpoints(tmp_path: Path, run: str) -> Path:
    return tmp_path / run / "dpo" / "version_0" / "checkpoints"


def killed_after_step_4(folder: Path) -> None:
    """As if the run was killed (kill -9) after step 4, mid-epoch: the later checkpoints never happened."""
    for name in ("last.ckpt", "epoch=1-step=8.ckpt", "epoch=1-step=6.ckpt"):
        (folder / name).unlink(missing_ok=True)


def same_weights(a, b) -> bool:
    b = b.state_dict()
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 8-step run: the trajectory every resumed run must reproduce."""
    return fit_cli(tmp_path_factory.mktemp("straight"), "a", 8).model.policy


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_skips_a_damaged_newest_checkpoint_naming_it(tmp_path, straight, damage):
    fit_cli(tmp_path, "b", 8)
    folder = checkpoints(tmp_path, "b")
    killed_after_step_4(folder)
    newest = folder / "epoch=0-step=4.ckpt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.warns(CheckpointWarning, match=re.escape(f"--resume skips {newest}: the checkpoint is ")):
        resumed = fit_cli(tmp_path, "b", 8, "--resume", "true")  # from step 2, the newest sound one
    assert resumed.trainer.global_step == 8
    assert same_weights(resumed.model.policy, straight)


def test_an_explicit_damaged_checkpoint_is_an_error_naming_it(tmp_path, capsys):
    fit_cli(tmp_path, "b", 2)
    path = checkpoints(tmp_path, "b") / "epoch=0-step=2.ckpt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(SystemExit) as exit_:
        fit_cli(tmp_path, "b", 4, "--ckpt_path", str(path))
    assert exit_.value.code == 2
    assert f"--ckpt_path = '{path}': the checkpoint is truncated" in capsys.readouterr().err
    (checkpoints(tmp_path, "b") / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit), pytest.warns(CheckpointWarning):
        fit_cli(tmp_path, "b", 4, "--resume", "true")
    assert "every checkpoint under" in capsys.readouterr().err  # nothing sound left: said, not step 0


def metrics_rows(tmp_path: Path, run: str) -> list[dict]:
    with open(tmp_path / run / "dpo" / "version_0" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_changed_settings_are_refused_by_name_and_the_logs_are_untouched(tmp_path, capsys):
    fit_cli(tmp_path, "b", 4, *CSV)
    metrics = tmp_path / "b" / "dpo" / "version_0" / "metrics.csv"
    before = metrics.read_bytes()
    other = str(DATA / "reviews_pairs_chat.jsonl")
    for change, listed in ((["--model.init_args.lr", "0.01"], "model.init_args.lr: 0.0005 -> 0.01"),
                           (["--data.train", other], f"data.train: 'configs/data/reviews_pairs_train.jsonl' -> {other!r}"),
                           (["--model.init_args.beta", "0.5"], "model.init_args.beta: 0.1 -> 0.5")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            fit_cli(tmp_path, "b", 6, *CSV, "--resume", "true", *change)
        assert exit_.value.code == 2
        error = capsys.readouterr().err
        assert (
            "settings that change the run's trajectory: " + listed in error
            and "--resume_with_changes" in error
        )
    assert metrics.read_bytes() == before  # a refused resume touched nothing
    # what does not change the trajectory may differ: more steps, another validation or logging cadence
    resumed = fit_cli(tmp_path, "b", 6, *CSV, "--resume", "true", "--trainer.log_every_n_steps", "2")
    assert resumed.trainer.global_step == 6


def test_resuming_appends_to_the_run_s_metrics_csv(tmp_path):
    fit_cli(tmp_path, "b", 6, *CSV)
    logged = metrics_rows(tmp_path, "b")
    killed_after_step_4(checkpoints(tmp_path, "b"))
    fit_cli(tmp_path, "b", 8, *CSV, "--resume", "true")
    now = metrics_rows(tmp_path, "b")
    assert now[: len(logged)] == [{**{k: "" for k in now[0]}, **row} for row in logged]  # history kept
    assert {int(r["step"]) for r in now if r.get("train/loss")} >= set(
        range(8)
    )  # and the resumed steps follow


@pytest.mark.slow
def test_resume_with_changes_applies_the_new_learning_rate_and_logs_it(tmp_path, capsys):
    fit_cli(tmp_path, "b", 4, "--model.init_args.warmup_steps", "0")
    run = fit_cli(tmp_path, "b", 6, "--model.init_args.warmup_steps", "0", "--resume", "true",
                  "--model.init_args.lr", "0.01", "--resume_with_changes", "true")  # fmt: skip
    (group,) = run.trainer.optimizers[0].param_groups
    assert group["lr"] == group["initial_lr"] == 0.01  # not the checkpoint's 5e-4
    assert run.trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.01]
    assert "with changed settings (model.init_args.lr: 0.0005 -> 0.01)" in capsys.readouterr().out
    log = tmp_path / "b" / "dpo" / "version_0" / "resumes.jsonl"
    assert [json.loads(line)["changes"] for line in log.read_text().splitlines()] == [
        {"model.init_args.lr": [0.0005, 0.01]}
    ]
    record = torch.load(checkpoints(tmp_path, "b") / "last.ckpt", weights_only=True)[RUN_KEY]
    assert record["config"]["model"]["init_args"]["lr"] == 0.01 and len(record["resumes"]) == 1
    # the changed run is now the run: resuming it with lr 0.01 needs no flag; 5e-4 would be a change again
    assert fit_cli(tmp_path, "b", 8, "--model.init_args.warmup_steps", "0", "--resume", "true",
                   "--model.init_args.lr", "0.01").trainer.global_step == 8  # fmt: skip
    # the same through an explicit --ckpt_path (Lightning would merge the checkpoint's hyper-parameters over it)
    step_4 = str(checkpoints(tmp_path, "b") / "epoch=0-step=4.ckpt")
    run = fit_cli(tmp_path, "c", 6, "--model.init_args.warmup_steps", "0", "--ckpt_path", step_4,
                  "--model.init_args.lr", "0.02", "--resume_with_changes", "true")  # fmt: skip
    assert run.model.hparams.lr == 0.02 and run.trainer.optimizers[0].param_groups[0]["lr"] == 0.02


def test_a_run_with_a_random_seed_resumes_with_the_seed_it_drew(tmp_path):
    first = fit_cli(tmp_path, "b", 2, "--seed_everything", "true")
    drawn = first.config["fit"]["seed_everything"]
    resumed = fit_cli(tmp_path, "b", 4, "--seed_everything", "true", "--resume", "true")  # draws another one
    assert resumed.trainer.global_step == 4 and resumed.config["fit"]["seed_everything"] == drawn


def run_config(**init_args):
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"every_n_train_steps": 2}},
                 {"class_path": "lit_pref.MagnetUpdate", "init_args": {"every_n_iterations": 10}}]  # fmt: skip
    return {"seed_everything": 0, "model": {"class_path": "lit_pref.MPO", "init_args": {"lr": 1e-4, **init_args}},
            "data": {"train": "a.jsonl", "val": "b.jsonl"},
            "trainer": {"max_steps": 10, "callbacks": callbacks, "logger": {"init_args": {"version": "version_0"}}}}  # fmt: skip


def test_only_settings_that_change_the_trajectory_count():
    old = run_config()
    assert changed_settings(old, run_config()) == {}
    new = run_config()
    new["trainer"].update(max_steps=20, logger={"init_args": {"version": "version_3"}})
    new["data"]["val"] = "c.jsonl"
    new["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 5  # an observer
    assert changed_settings(old, new) == {}
    new["trainer"]["callbacks"][1]["init_args"]["every_n_iterations"] = 20  # changes the magnet's schedule
    new["model"]["init_args"]["eta"] = 0.5  # a setting the old record does not know (another version)
    assert changed_settings(old, new) == {
        "trainer.callbacks.MagnetUpdate.init_args.every_n_iterations": [10, 20]
    }
    new["trainer"]["callbacks"].pop(1)
    assert changed_settings(old, new) == {
        "trainer.callbacks.MagnetUpdate.class_path": ["lit_pref.MagnetUpdate", None]
    }


def test_a_change_no_resume_can_apply_is_refused_even_when_allowed():
    record = {"config": run_config(policy="a")}
    with pytest.raises(ConfigError, match=r"other model.init_args.policy .*weights would replace them"):
        check_same_run(record, run_config(policy="b"), Path("x.ckpt"), allow=True)
    assert check_same_run(record, run_config(policy="a", lr=1e-3), Path("x.ckpt"), allow=True) == {
        "model.init_args.lr": [1e-4, 1e-3]
    }


@pytest.mark.parametrize("option", ["--trainer.logger.init_args.save_dir", "--trainer.default_root_dir"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_run(
    tmp_path, capsys, monkeypatch, option
):
    import lit_pref.commands.lightning as lightning

    monkeypatch.setattr(
        lightning.PolicyModule, "configure_model", lambda self: pytest.fail("the run started")
    )
    (tmp_path / "a-file").write_text("")
    blocked = str(tmp_path / "a-file" / "runs")
    args = [option, blocked] + (
        ["--trainer.logger", "false", "--trainer.callbacks=[]"] if "root" in option else []
    )
    with pytest.raises(SystemExit) as exit_:
        fit_cli(tmp_path, "b", 2, *args)
    assert exit_.value.code == 2
    named = (
        "trainer.logger (TensorBoardLogger) save_dir" if "logger" in option else "trainer.default_root_dir"
    )
    assert f"{named} = '{blocked}': {tmp_path / 'a-file'} is a file, not a folder" in capsys.readouterr().err


def test_a_checkpoint_folder_that_cannot_be_written_is_named(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "ckpt.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                      f"      init_args: {{dirpath: {tmp_path / 'a-file' / 'ckpts'}}}\n")  # fmt: skip
    with pytest.raises(SystemExit):
        fit_cli(tmp_path, "b", 2, "--config", str(config))
    assert "ModelCheckpoint dirpath = " in capsys.readouterr().err
