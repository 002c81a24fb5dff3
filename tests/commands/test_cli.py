"""`python -m lit_pref`: configs merge, links, help from docstrings, TensorBoard metrics, clear user errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_pref.cli import main
from tests.conftest import REPO


def cli(*args: str):
    return main(list(args))


@pytest.mark.slow
def test_fit_from_composed_configs_logs_the_metric_vocabulary(tmp_path):
    run = cli(
        "fit",
        "--config",
        str(REPO / "configs/dpo.yaml"),
        "--config",
        str(REPO / "configs/lora.yaml"),
        "--trainer.max_steps",
        "4",
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
        "--trainer.callbacks+=lit_pref.GenerationSamples",
        "--trainer.callbacks.every_n_steps=2",
        "--trainer.enable_progress_bar=false",
    )
    module = run.model
    assert module.lora.r == 8 and type(module.reference).__name__ == "DisabledAdapter"  # lora.yaml merged in
    assert module.hparams.max_length == 64  # linked from data.max_length
    log_dir = tmp_path / "dpo" / "version_0"
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for name in [
        "train/loss",
        "train/rewards/chosen",
        "train/rewards/rejected",
        "train/rewards/margins",
        "train/rewards/accuracies",
        "train/logps/chosen",
        "train/logps/rejected",
        "val/loss",
        "val/rewards/accuracies",
        "perf/tokens_per_sec",
        "lr-AdamW",
    ]:
        assert name in scalars, name
    assert "samples/generations/text_summary" in events.Tags()["tensors"]
    assert (log_dir / "config.yaml").exists()
    assert (log_dir / "export" / "config.json").exists()


@pytest.mark.slow
def test_help_comes_from_docstrings():
    out = subprocess.run(
        [sys.executable, "-m", "lit_pref", "fit", "--model.help", "lit_pref.DPO"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "Strength of the implicit KL penalty" in out
    assert "--model.lora" in out  # base-module options reach subclasses through **kwargs
    out = subprocess.run(
        [sys.executable, "-m", "lit_pref", "fit", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "Maximum prompt tokens; longer prompts keep their end." in " ".join(out.split())


def test_user_errors_exit_cleanly_with_the_option_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(
            "fit",
            "--config",
            str(REPO / "configs/dpo.yaml"),
            "--model.reference",
            "lit_pref.DisabledAdapter",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",  # without a logger, config.yaml goes there
            str(tmp_path),
        )
    assert exc.value.code == 2
    assert "set model.init_args.lora" in capsys.readouterr().err


def test_missing_data_file_names_the_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(
            "fit",
            "--config",
            str(REPO / "configs/dpo.yaml"),
            "--data.train",
            str(tmp_path / "nope.jsonl"),
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",  # without a logger, config.yaml goes there
            str(tmp_path),
        )
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err


def test_predict_writes_one_generation_per_prompt(tmp_path):
    out = tmp_path / "pred.jsonl"
    cli(
        "predict",
        "--config", str(REPO / "configs/sft.yaml"),
        "--data.predict", str(REPO / "configs/data/reviews_sft_val.jsonl"),
        "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path),  # without a logger, config.yaml goes there
        "--trainer.limit_predict_batches", "1",
        "--trainer.callbacks+=lit_pref.PredictionWriter",
        f"--trainer.callbacks.path={out}",
    )  # fmt: skip
    import json

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 16  # one batch of data.batch_size prompts
    assert rows[0]["prompt"].endswith("Write a one-line review of the lamp.")
    assert all(isinstance(r["response"], str) for r in rows)


def test_a_command_leaves_the_process_group_when_it_ends(tmp_path):
    """Lightning destroys the process group at exit for NCCL only; a gloo group left to interpreter teardown now
    and then aborted a finished 2-process run (exit code -6)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit):
            main(["data", "--task", "no_such_task", "--out", str(tmp_path)])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_top_level_help_lists_every_subcommand_without_importing_the_heavy_libraries():
    from lit_pref.cli import SUBCOMMANDS

    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "lit_pref", "--help"], capture_output=True,
                         text=True, cwd=REPO, check=True)  # fmt: skip
    usage = run.stdout.splitlines()[0]
    assert usage == f"usage: python -m lit_pref [-h] {{{','.join(SUBCOMMANDS)}}} ..."
    assert {"fit", "sample", "data", "crossfit"} <= set(SUBCOMMANDS)
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "lit_pref.cli" in imported
    assert not imported & {"torch", "lightning", "transformers", "datasets", "peft", "jsonargparse"}
    bare = subprocess.run([sys.executable, "-m", "lit_pref"], capture_output=True, text=True, cwd=REPO)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: python -m lit_pref")


class StepProbe(Callback):
    """Records the training bar's (total, completed), the global step and the epoch before every step."""

    seen: list[tuple] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        bar = trainer.progress_bar_callback
        task = bar.progress.tasks[bar.train_progress_bar_id]
        StepProbe.seen.append((task.total, task.completed, trainer.global_step, trainer.current_epoch))


def test_a_max_steps_run_shows_steps_of_max_steps_in_its_progress_bar(tmp_path):
    from lit_pref.callbacks.progress import StepProgressBar

    StepProbe.seen.clear()
    run = cli("fit", "--config", str(REPO / "configs/dpo.yaml"), "--trainer.max_steps", "3",
              "--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.callbacks=[]",
              "--trainer.default_root_dir", str(tmp_path),  # without a logger, config.yaml goes there
              "--trainer.callbacks+=tests.commands.test_cli.StepProbe", "--data.max_rows", "4",
              "--data.batch_size", "2", "--trainer.enable_checkpointing", "false")  # fmt: skip
    assert isinstance(run.trainer.progress_bar_callback, StepProgressBar)
    # two batches an epoch: the bar runs on over the epoch boundary, counting steps of max_steps
    assert StepProbe.seen == [(3, 0, 0, 0), (3, 1, 1, 0), (3, 2, 2, 1)]


@pytest.mark.parametrize("command", [["data", "--task", "reviews", "--format", "pairwise"],
                                     ["crossfit", "--config", "configs/causal/outcome_model.yaml"]])  # fmt: skip
def test_an_out_folder_that_cannot_be_written_is_named_before_any_work(tmp_path, capsys, command):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "out"
    with pytest.raises(SystemExit) as exit_:
        cli(*command, "--out", str(out))
    assert exit_.value.code == 2
    assert (
        f"{command[0]}: --out {out}: {tmp_path / 'a-file'} is a file, not a folder" in capsys.readouterr().err
    )
