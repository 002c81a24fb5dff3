"""Issue 16 (and 19's cache/tokenizer items): no silent wrong data, verified caches, named errors, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.atomic import atomic_write
from lit_pref.cli import main
from lit_pref.errors import ConfigError, DataError
from tests.conftest import DATA, REPO, write_jsonl
from tests.helpers import Recorder, data_module, fit_cli, trainer

PAIR = {"prompt": "Write a review.", "chosen": "Good lamp.", "rejected": "Bad lamp."}


def make_dm(tokenizer, train, **kwargs) -> lit_pref.PreferenceDataModule:
    kwargs = {"batch_size": 1, "max_length": 64, "max_prompt_length": 32, "shuffle": False, **kwargs}
    dm = lit_pref.PreferenceDataModule(train=train, **kwargs)
    dm.tokenizer = tokenizer
    return dm


# -- bad files -------------------------------------------------------------------------------------------------
BAD_FILES = {
    "empty": ("", r"{path}: the file is empty"),
    "blank lines": ("\n  \n", r"{path}: the file is empty"),
    "broken line": (json.dumps(PAIR) + "\n" + '{"prompt": "x", "chosen": \n', r"{path}, line 2: "),
    "not an object": (json.dumps(PAIR) + "\n[1, 2]\n", r"{path}, line 2: expected one JSON object"),
    "missing column": (json.dumps({"prompt": "p", "chosen": "c"}) + "\n", r"DPO trains on pairwise rows \(columns \['chosen', 'rejected'\]\)"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_named(tmp_path, case):
    text, pattern = BAD_FILES[case]
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    dm = lit_pref.PreferenceDataModule(train=str(path), batch_size=1)
    with pytest.raises((DataError, ConfigError), match=pattern.format(path=re.escape(str(path)))):
        trainer(1).fit(lit_pref.DPO(), dm)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_non_utf8_bytes_are_named_by_file_line_and_offset(tmp_path, tokenizer, suffix):
    first = (json.dumps(PAIR) if suffix == ".jsonl" else "prompt,chosen,rejected") + "\n"
    second = (
        b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n' if suffix == ".jsonl" else b"caf\xe9,a,b\n"
    )
    path = tmp_path / f"latin1{suffix}"
    path.write_bytes(first.encode() + second)
    at = second.index(b"\xe9")
    where = f"{path}, line 2, byte {at + 1} of the line (offset {len(first) + at} in "
    with pytest.raises(
        DataError, match=re.escape(where) + r"the file\): byte 0xe9 is not UTF-8 .*re-save it as UTF-8"
    ):
        make_dm(tokenizer, str(path)).setup("fit")


def test_missing_file_is_named(tmp_path, tokenizer):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=re.escape(path) + ": no such file"):
        make_dm(tokenizer, path).setup("fit")


# -- bad rows --------------------------------------------------------------------------------------------------
def chat(*turns):
    return [{"role": role, "content": text} for role, text in turns]


BAD_ROWS = {
    "prompt ends with assistant": (
        {"prompt": chat(("user", "Hi"), ("assistant", "Hello")), "chosen": chat(("assistant", "a")),
         "rejected": chat(("assistant", "b"))}, "prompt", "ends with a 'assistant' message"),
    "unknown prompt role": (
        {"prompt": chat(("moderator", "Hi")), "chosen": chat(("assistant", "a")), "rejected": chat(("assistant", "b"))},
        "prompt", "role 'moderator'"),
    "user turn in a completion": (
        {"prompt": chat(("user", "Hi")), "chosen": chat(("user", "a")), "rejected": chat(("assistant", "b"))},
        "chosen", "role 'user'"),
    "null rejected": ({**PAIR, "rejected": None}, "rejected", "missing"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_row_and_column(tmp_path, tokenizer, case):
    row, column, problem = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "rows.jsonl", [PAIR, row])
    expected = re.escape(f"{path}, row 1, column '{column}': ") + ".*" + re.escape(problem)
    with pytest.raises(DataError, match=expected):
        make_dm(tokenizer, path).setup("fit")


# -- bad options -----------------------------------------------------------------------------------------------
def oracle():
    return lit_pref.BradleyTerryOracle(lit_pref.TaskReward())


BAD_OPTIONS = [
    (lambda: lit_pref.DPO(beta=-0.1), "model.init_args.beta"),
    (lambda: lit_pref.DPO(beta=0.0, loss_type="ipo"), "model.init_args.beta"),
    (lambda: lit_pref.DPO(label_smoothing=0.7), "model.init_args.label_smoothing"),
    (lambda: lit_pref.DPO(lr=-1e-4), "model.init_args.lr"),
    (lambda: lit_pref.SFT(warmup_steps=-1), "model.init_args.warmup_steps"),
    (lambda: lit_pref.WSPO(weak_reference="a", weak_aligned="b", gamma=0.0), "model.init_args.gamma"),
    (lambda: lit_pref.MPO(oracle=oracle(), eta=0.0), "model.init_args.eta"),
    (lambda: lit_pref.MPO(oracle=oracle(), alpha=-1.0), "model.init_args.alpha"),
    (lambda: lit_pref.MPO(oracle=oracle(), updates_per_rollout=0), "model.init_args.updates_per_rollout"),
    (lambda: lit_pref.MPO(oracle=oracle(), sampling={"temperature": 0.0}), "sampling.temperature"),
    (lambda: lit_pref.SamplingConfig(top_p=1.5), "sampling.top_p"),
    (lambda: lit_pref.RewardModel(center_rewards=-1.0), "model.init_args.center_rewards"),
    (lambda: lit_pref.PreferenceDataModule(batch_size=0), "data.batch_size"),
    (lambda: lit_pref.PreferenceDataModule(eval_batch_size=0), "data.eval_batch_size"),
    (lambda: lit_pref.PreferenceDataModule(max_length=0), "data.max_length"),
    (lambda: lit_pref.PreferenceDataModule(max_rows=0), "data.max_rows"),
    (lambda: lit_pref.GenerationSamples(num_prompts=0), "GenerationSamples.num_prompts"),
    (lambda: lit_pref.CompanionRefresh(every_n_epochs=0), "CompanionRefresh.every_n_epochs"),
    (
        lambda: lit_pref.RewardEvaluation(reward=lit_pref.TaskReward(), batch_size=0),
        "RewardEvaluation.batch_size",
    ),
    (lambda: lit_pref.MagnetUpdate(every_n_iterations=0), "MagnetUpdate.every_n_iterations"),
    (lambda: lit_pref.MagnetUpdate(ema_decay=1.0), "MagnetUpdate.ema_decay"),
    (lambda: lit_pref.BradleyTerryOracle(lit_pref.TaskReward(), tau=0.0), "BradleyTerryOracle.tau"),
    (lambda: lit_pref.CyclicStyleOracle(lit_pref.TaskReward(), weight=-1.0), "CyclicStyleOracle.weight"),
    (lambda: lit_pref.Precomputed(batch_size=0), "Precomputed.batch_size"),
    (lambda: lit_pref.GameMetrics(every_n_steps=0), "GameMetrics.every_n_steps"),
    (lambda: lit_pref.OutcomeRegret(every_n_steps=0), "OutcomeRegret.every_n_steps"),
]


@pytest.mark.parametrize("build,option", BAD_OPTIONS, ids=[o for _, o in BAD_OPTIONS])
def test_bad_option_is_a_named_error_at_construction(build, option):
    with pytest.raises(ConfigError, match=re.escape(option) + " must be"):
        build()


def test_bad_option_from_the_cli_is_a_clean_exit(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "configs/dpo.yaml"), "--model.init_args.beta", "-1"])
    assert exit_.value.code == 2
    assert "model.init_args.beta must be > 0, got -1.0" in capsys.readouterr().err


# -- missing models and tokenizers -----------------------------------------------------------------------------
def test_missing_tokenizer_folder_names_the_option(tmp_path):
    dm = lit_pref.PreferenceDataModule(tokenizer=str(tmp_path / "no-such-model"), train="x.jsonl")
    with pytest.raises(ConfigError, match=r"data.tokenizer = .*no-such-model'?: no such folder") as err:
        dm.setup("fit")
    assert "repo id" not in str(err.value) and "repo_id" not in str(err.value)


def test_folder_without_tokenizer_files_says_what_it_lacks(tmp_path, tiny_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "config.json").write_text(Path(tiny_path, "config.json").read_text())
    dm = lit_pref.PreferenceDataModule(tokenizer=str(folder), train="x.jsonl")
    with pytest.raises(
        ConfigError, match=r"data.tokenizer = .*weights-only'?: the folder has no tokenizer files"
    ) as err:
        dm.setup("fit")
    assert "tokenizer.json" in str(err.value) and "config.json" in str(
        err.value
    )  # what it needs, what it holds


def test_missing_policy_and_companion_folders_name_their_options(tmp_path):
    policy = lit_pref.DPO(policy=str(tmp_path / "policy"))
    with pytest.raises(ConfigError, match=r"model.init_args.policy = .*policy'?: no such folder"):
        trainer(1).fit(policy, data_module(max_rows=16))
    wspo = lit_pref.WSPO(weak_reference=str(tmp_path / "weak"), weak_aligned=str(tmp_path / "weak"))
    with pytest.raises(ConfigError, match=r"model.init_args.weak_reference = .*weak'?: no such folder"):
        trainer(1).fit(wspo, data_module("sft", max_rows=16))


# -- degenerate pairs and truncation ---------------------------------------------------------------------------
def test_degenerate_pairs_and_truncation_are_counted(tmp_path, tokenizer):
    long_prompt = " ".join(["please write a review of the lamp"] * 8)
    long_answer = " ".join(["the lamp is good"] * 12)
    rows = [
        PAIR,  # kept as is
        {
            "prompt": "Review it.",
            "chosen": "Same text.",
            "rejected": "Same text.",
        },  # identical before tokenizing
        {"prompt": long_prompt, "chosen": "Good lamp.", "rejected": "Bad lamp."},  # prompt truncated, kept
        {"prompt": "Review it.", "chosen": long_answer, "rejected": "Bad lamp."},  # response truncated, kept
        {
            "prompt": "Review it.",
            "chosen": long_answer + " yes",
            "rejected": long_answer + " no",
        },  # same once cut
    ]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "pairs.jsonl", rows), max_length=32, max_prompt_length=16)
    dm.setup("fit")
    report = dm.reports["train"]
    assert report["rows"] == 5 and report["kept"] == 3
    assert report["identical_pair"] == 2 and report.get("empty_response", 0) == 0
    assert report["truncated_prompts"] == 1 and report["truncated_responses"] == 1
    assert dm.datasets["train"]["source_row"] == [0, 2, 3]
    for row in dm.datasets["train"]:
        assert row["chosen_ids"] != row["rejected_ids"]


def test_report_is_logged_once_per_split(tmp_path, tokenizer, caplog):
    train = write_jsonl(tmp_path / "t.jsonl", [PAIR, {**PAIR, "rejected": PAIR["chosen"]}])
    dm = make_dm(tokenizer, train, val=write_jsonl(tmp_path / "v.jsonl", [PAIR]))
    with caplog.at_level("INFO"):
        dm.setup("fit")
    lines = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("lit_pref: data.train (") and "2 rows, kept 1" in lines[0]
    assert "dropped 1 (chosen == rejected after tokenization and truncation: 1)" in lines[0]
    assert lines[1].startswith("lit_pref: data.val (") and "dropped 0" in lines[1]


def test_split_with_nothing_left_names_the_length_options(tmp_path, tokenizer):
    # a long shared opening: once cut to 2 response tokens every pair is identical
    rows = [
        {
            "prompt": f"Please write a short review of item {i} now.",
            "chosen": "The lamp is good.",
            "rejected": "The lamp is bad.",
        }
        for i in range(4)
    ]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "pairs.jsonl", rows), max_length=8, max_prompt_length=6)
    with pytest.raises(
        DataError, match=r"kept 0 .*dropped 4 .*data.max_length \(now 8\).*data.max_prompt_length"
    ):
        dm.setup("fit")


# -- stale data and caches -------------------------------------------------------------------------------------
def rewrite_keeping_mtime(path: Path, old: str, new: str) -> None:
    stat = path.stat()
    text = path.read_text()
    assert len(old) == len(new) and old in text
    path.write_text(text.replace(old, new, 1))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_content_edit_with_kept_mtime_invalidates_rows_and_cache(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text((DATA / "reviews_pairs_train.jsonl").read_text())
    cache = tmp_path / "logps"

    def fit():
        dm = data_module(max_rows=32, val=None)
        dm.sources["train"] = str(train)
        module = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache)))
        trainer(1, limit_val_batches=0).fit(module, dm)
        return dm

    first = fit()
    first_prompt = first.datasets["train"][0]["prompt_ids"]
    old_chosen = json.loads(train.read_text().splitlines()[0])["chosen"]
    rewrite_keeping_mtime(train, old_chosen, old_chosen[::-1])
    second = fit()
    assert second.fingerprints["train"] != first.fingerprints["train"]
    assert second.datasets["train"][0]["prompt_ids"] == first_prompt
    assert second.datasets["train"][0]["chosen_ids"] != first.datasets["train"][0]["chosen_ids"]  # new rows
    assert len(list(cache.glob("*.pt"))) == 2  # the edited data got its own cache file


def step0_loss(cache: Path) -> tuple[float, lit_pref.DPO]:
    pl.seed_everything(0)
    rec = Recorder()
    module = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache)))
    trainer(1, [rec], limit_val_batches=0).fit(module, data_module(max_rows=32, val=None))
    return rec.steps[0][1], module


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def wrong_values(path: Path) -> None:  # right shapes, wrong values (the old layout had no checksum at all)
    saved = torch.load(path, weights_only=True)
    saved["values"] = saved["values"] * 3
    torch.save(saved, path)


def foreign_tuple(path: Path) -> None:  # the pre-checksum layout: (values, offsets)
    saved = torch.load(path, weights_only=True)
    torch.save((saved["values"] * 3, saved["offsets"]), path)


def wrong_lengths(path: Path) -> None:  # a consistent file for other data: checksum fine, lengths not
    from lit_pref.models.companions import Precomputed

    saved = torch.load(path, weights_only=True)
    values, offsets = saved["values"][:-1], torch.cat([saved["offsets"][:-1], saved["offsets"][-1:] - 1])
    Precomputed._save((values, offsets), path)


@pytest.mark.parametrize("corrupt", [truncate, garbage, wrong_values, foreign_tuple, wrong_lengths])
def test_bad_cache_is_reported_by_path_and_recomputed(tmp_path, corrupt):
    cache = tmp_path / "logps"
    expected, _ = step0_loss(cache)
    assert abs(expected - 0.6931) < 1e-3  # policy == reference at step 0
    (path,) = cache.glob("*.pt")
    corrupt(path)
    with pytest.warns(UserWarning, match=re.escape(f"ignoring the cached log-probs {path}")):
        loss, _ = step0_loss(cache)
    assert loss == expected
    assert not list(cache.glob(".*.tmp"))  # rewritten atomically, no temp left
    saved = torch.load(path, weights_only=True)
    assert saved["checksum"] == lit_pref.Precomputed._checksum(saved["values"], saved["offsets"])


def test_cache_hit_never_builds_the_source_model(tmp_path, monkeypatch, tiny_path):
    import lit_pref.models.companions as companions

    cache = tmp_path / "logps"
    first, _ = step0_loss(cache)
    calls = []
    for name in ("load_causal_lm", "frozen_copy_of_policy"):
        original = getattr(companions, name)
        monkeypatch.setattr(
            companions, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k)
        )
    again, module = step0_loss(cache)
    assert calls == [] and module.reference.source.model is None
    assert again == first
    # a frozen model given by path is fingerprinted from its files: a copy elsewhere is the same model (a hit)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_path, copy)

    def fit_with(dtype):
        source = lit_pref.FrozenCopy(model=str(copy), dtype=dtype)
        module = lit_pref.DPO(reference=lit_pref.Precomputed(source=source, cache_dir=str(cache)))
        trainer(1, limit_val_batches=0).fit(module, data_module(max_rows=32, val=None))

    fit_with("float32")
    assert calls == []
    fit_with("bfloat16")  # another model: built once to fill its cache
    assert calls == ["load_causal_lm"]
    fit_with("bfloat16")  # then a hit
    assert calls == ["load_causal_lm"]


# -- resume and export -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_flag_continues_bit_exact(tmp_path):
    straight = fit_cli(tmp_path, "a", 8).model.policy.state_dict()
    first = fit_cli(tmp_path, "b", 8, "--resume", "true")  # no checkpoint yet: starts at step 0
    assert first.trainer.global_step == 8
    checkpoints = tmp_path / "b" / "dpo" / "version_0" / "checkpoints"
    for name in ("last.ckpt", "epoch=1-step=8.ckpt", "epoch=1-step=6.ckpt"):
        (checkpoints / name).unlink()  # as if killed (kill -9) after step 4, mid-epoch (5 batches per epoch)
    resumed = fit_cli(tmp_path, "b", 8, "--resume", "true")
    assert resumed.trainer.global_step == 8
    assert sorted(p.name for p in (tmp_path / "b" / "dpo").iterdir()) == ["version_0"]  # same run folder
    for key, value in resumed.model.policy.state_dict().items():
        assert torch.equal(value, straight[key]), key
    (checkpoints / "last.ckpt").unlink()
    (checkpoints / "epoch=1-step=8.ckpt").unlink()
    again = fit_cli(tmp_path, "b", 8, "--ckpt_path", "last")  # the Lightning spelling does the same
    assert again.trainer.global_step == 8 and sorted(p.name for p in (tmp_path / "b" / "dpo").iterdir()) == [
        "version_0"
    ]
    for key, value in again.model.policy.state_dict().items():
        assert torch.equal(value, straight[key]), key


def test_export_removes_stale_temp_folders(tmp_path):
    target = tmp_path / "export"
    stale = tmp_path / ".export.tmp-999999999-killed"  # the pid of a writer that no longer runs
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    atomic_write(target, lambda tmp: (tmp / "config.json").write_text("{}"), directory=True)
    assert not stale.exists() and (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
