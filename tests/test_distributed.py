"""Scale-out on 2 CPU processes (gloo): FSDP2 through ModelParallelStrategy, and DDP. Each run is a real
`python -m lit_pref fit` in a subprocess, as users launch it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.distributed

PROBE = ["--trainer.callbacks+=tests.distributed_probe.LossProbe"]
QUICK = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.limit_val_batches",
    "0",
    "--data.max_rows",
    "128",
]


def fit(tmp_path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PROBE_OUT": str(out)}
    cmd = [sys.executable, "-m", "lit_pref", "fit", *args, *QUICK, *PROBE,
           "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.logger.init_args.name", name]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


DPO = ["--config", "configs/dpo.yaml", "--trainer.max_steps", "6", "--trainer.callbacks=[]"]
FSDP2 = ["--config", "configs/strategy/fsdp2.yaml"]


def test_fsdp2_dpo_equals_one_process_on_the_same_global_batch_and_shards(tmp_path):
    one = fit(tmp_path, "one", *DPO, "--data.batch_size", "16")
    two = fit(
        tmp_path, "two", *DPO, *FSDP2, "--data.batch_size", "8"
    )  # 2 ranks x 8 = the same 16 rows per step
    assert [s for s, _ in two["losses"]] == [s for s, _ in one["losses"]] == list(range(1, 7))
    diffs = [abs(a - b) for (_, a), (_, b) in zip(one["losses"], two["losses"])]
    assert max(diffs) < 1e-4, (one["losses"], two["losses"])
    assert one["losses"][-1][1] < one["losses"][0][1] - 0.05  # it trained, so equality means something
    total, local = two["total_params"], two["local_params"]
    assert len(local) == 2 and sum(local) == total and max(local) < 0.55 * total  # each rank holds about half


@pytest.mark.parametrize("distributed_checkpoint", ["false", "true"])
def test_fsdp2_resume_continues_the_same_trajectory(tmp_path, distributed_checkpoint):
    sharding = [*FSDP2, "--trainer.strategy.init_args.save_distributed_checkpoint", distributed_checkpoint]
    ckpt = ["--trainer.enable_checkpointing", "true",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=3", "--trainer.callbacks.save_top_k=-1",
            f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}"]  # fmt: skip
    full = fit(tmp_path, "full", *DPO, *sharding, "--data.batch_size", "8", *ckpt)
    step3 = tmp_path / "ckpt" / "epoch=0-step=3.ckpt"
    assert step3.is_dir() == (distributed_checkpoint == "true")  # a folder of per-rank shards, or one file
    resumed = fit(tmp_path, "resumed", *DPO, *sharding, "--data.batch_size", "8", "--ckpt_path", str(step3))
    assert [s for s, _ in resumed["losses"]] == [4, 5, 6]
    assert [v for _, v in resumed["losses"]] == pytest.approx([v for _, v in full["losses"][3:]], abs=1e-5)


def test_ddp_runs_and_matches_one_process(tmp_path):
    one = fit(tmp_path, "one", *DPO, "--data.batch_size", "16", "--trainer.max_steps", "3")
    ddp = fit(
        tmp_path,
        "ddp",
        *DPO,
        "--config",
        "configs/strategy/ddp.yaml",
        "--data.batch_size",
        "8",
        "--trainer.max_steps",
        "3",
    )
    assert [s for s, _ in ddp["losses"]] == [1, 2, 3]
    assert [v for _, v in ddp["losses"]] == pytest.approx([v for _, v in one["losses"]], abs=1e-4)


def test_fsdp2_mpo_refreshes_the_sharded_magnet(tmp_path):
    result = fit(
        tmp_path, "mpo", "--config", "configs/repro/mpo_game_mpo.yaml", "--config", "configs/repro/mpo_game_sampled.yaml",
        *FSDP2, "--trainer.max_steps", "8", "--model.init_args.updates_per_rollout", "2", "--data.batch_size", "4",
        "--trainer.callbacks=[{class_path: lit_pref.MagnetUpdate, init_args: {every_n_iterations: 2}}]",
    )  # fmt: skip
    assert (
        result["magnet_refreshes"] == 2 and result["magnet_equals_policy"]
    )  # refreshed after the last iteration
    assert max(result["local_params"]) < 0.6 * result["total_params"]


def test_fsdp2_wspo_with_four_models(tmp_path):
    weak = str(tmp_path / "weak_aligned")
    import lit_pref
    from lit_pref.models.loading import load_causal_lm

    model = load_causal_lm("builtin:tiny")
    import torch

    with torch.no_grad():
        model.lm_head.weight.mul_(1.2)
    model.save_pretrained(weak)
    lit_pref.models.load_tokenizer("builtin:tiny").save_pretrained(weak)
    args = ["--config", "configs/sft.yaml", "--model", "lit_pref.WSPO", "--model.weak_reference", "builtin:tiny",
            "--model.weak_aligned", weak, "--model.gamma", "0.5", "--trainer.max_steps", "4", "--trainer.callbacks=[]"]  # fmt: skip
    one = fit(tmp_path, "wspo_one", *args, "--data.batch_size", "16")
    two = fit(tmp_path, "wspo_two", *args, *FSDP2, "--data.batch_size", "8")
    assert [round(v, 4) for _, v in two["losses"]] == pytest.approx(
        [round(v, 4) for _, v in one["losses"]], abs=1e-4
    )


def test_fsdp2_dpo_with_shared_prefixes_equals_the_plain_one_process_run(tmp_path):
    plain = ["--model.init_args.prefix_sharing", "false"]
    one = fit(tmp_path, "one", *DPO, *plain, "--data.batch_size", "16", "--trainer.max_steps", "3")
    shared = ["--model.init_args.prefix_sharing", "true", "--model.init_args.pack_tokens", "128"]
    two = fit(tmp_path, "two", *DPO, *FSDP2, *shared, "--data.batch_size", "8", "--trainer.max_steps", "3")
    assert [s for s, _ in two["losses"]] == [1, 2, 3]
    assert [v for _, v in two["losses"]] == pytest.approx([v for _, v in one["losses"]], abs=1e-4)


def test_fsdp2_rft_shards_trains_and_exports_both_models(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    export = tmp_path / "export"
    result = fit(
        tmp_path, "rft", "--config", "configs/irft/rft.yaml", *FSDP2, "--model.init_args.policy", "builtin:tiny",
        "--trainer.max_steps", "3", "--data.task_options", "{num_rows: 64}", "--data.batch_size", "4",
        f"--trainer.callbacks=[{{class_path: lit_pref.ExportHF, init_args: {{dirpath: {export}}}}}]",
    )  # fmt: skip
    assert set(result["trained"]) == {"policy", "reward_model"}
    for name, (local, total) in result["trained"].items():
        assert len(local) == 2 and max(local) < 0.6 * total, name  # each rank holds about half of each model
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for _, v in result["losses"])
    AutoModelForCausalLM.from_pretrained(export)  # both gathered from the shards and saved
    reward = AutoModelForSequenceClassification.from_pretrained(f"{export}_reward_model")
    assert reward.config.num_labels == 1


def test_fsdp2_resume_skips_a_damaged_checkpoint_and_applies_changed_settings(tmp_path):
    """Issue 29 under FSDP2 (whole-state checkpoints, lit_pref's atomic writer on rank 0): `--resume` passes over
    a truncated newest checkpoint to the one before, and `--resume_with_changes` applies a new learning rate on
    every rank (its log line asks every rank for the log folder: a collective)."""
    ckpt = ["--trainer.enable_checkpointing", "true",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.save_top_k=-1"]  # fmt: skip
    run = [*DPO, *FSDP2, "--data.batch_size", "8", *ckpt]
    fit(tmp_path, "run", *run, "--trainer.max_steps", "4")
    folder = tmp_path / "runs" / "run" / "version_0" / "checkpoints"
    newest = folder / "epoch=0-step=4.ckpt"
    newest.write_bytes(newest.read_bytes()[:5000])
    resumed = fit(tmp_path, "run", *run, "--trainer.max_steps", "6", "--resume", "true",
                  "--model.init_args.lr", "1e-3", "--resume_with_changes", "true")  # fmt: skip
    assert [s for s, _ in resumed["losses"]] == [3, 4, 5, 6]  # from step 2: the step-4 file was skipped
    (line,) = (folder.parent / "resumes.jsonl").read_text().splitlines()
    assert json.loads(line)["changes"] == {"model.init_args.lr": [0.0005, 0.001]}
