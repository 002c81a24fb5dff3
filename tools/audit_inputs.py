"""Re-run the issue-16 audit (35 bad inputs and failure conditions) and issue 29's fault cases, each classified by
what lit_pref does.

    OMP_NUM_THREADS=1 python tools/audit_inputs.py [--only NAME_SUBSTRING]

Outcomes: `clear error` (a lit_pref error whose message names what it must: file, line, row, column or option),
`confusing error` (a lit_pref error that does not), `counted drop` (rows dropped and reported with their reason),
`handled` (the condition is detected and dealt with correctly: cache recomputed, stale data reloaded, resume
continued, temp folder removed), `crash` (any other exception), `silent wrong` (it ran and the result is wrong),
`data lost` (an earlier result was destroyed). Everything runs offline in a temporary folder, on the built-in tiny
model and the example data in configs/data. Faults that need a real disk, a kill or a second process are injected:
a full disk is a checkpoint write that fails with ENOSPC halfway, a kill is a deleted newer checkpoint, a read-only
folder is /sys for root (who writes anywhere else) or a chmod 555 folder. The table at the end counts each group's
outcomes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "configs" / "data"
PAIR = {"prompt": "Write a review.", "chosen": "Good lamp.", "rejected": "Bad lamp."}
TMP = Path(tempfile.mkdtemp(prefix="lit_pref_audit-"))


class Outcome(Exception):
    """A case that ran to the end says how it ended by raising this."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


# -- helpers ---------------------------------------------------------------------------------------------------
def write(name: str, rows=None, text: str | None = None) -> str:
    path = TMP / name
    path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def dm(train: str, **kwargs):
    import lit_pref

    kwargs = {"batch_size": 2, "max_length": 64, "max_prompt_length": 32, "text_as_chat": True, **kwargs}
    return lit_pref.PreferenceDataModule(train=train, **kwargs)


def trainer(steps: int = 1, **kwargs):
    import lightning.pytorch as pl

    kwargs = {"logger": False, "enable_checkpointing": False, "num_sanity_val_steps": 0, "limit_val_batches": 0,
              "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu", **kwargs}  # fmt: skip
    return pl.Trainer(max_steps=steps, **kwargs)


def fit(module, data, steps: int = 1) -> list[float]:
    from lightning.pytorch.callbacks import Callback

    losses: list[float] = []

    class Losses(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer(steps, callbacks=[Losses()]).fit(module, data)
    return losses


def pairs(n: int = 32) -> str:
    return write(f"pairs{n}.jsonl", read_pairs(n))


def read_pairs(n: int) -> list[dict]:
    return [json.loads(line) for line, _ in zip(open(DATA / "reviews_pairs_train.jsonl"), range(n))]


def dropped(data, reason: str) -> None:
    """The split loaded: a counted drop if the report counts `reason`, else silently wrong."""
    report = data.reports["train"]
    if report.get(reason):
        raise Outcome("counted drop", f"{report[reason]} {reason} of {report['rows']}; kept {report['kept']}")
    raise Outcome("silent wrong", f"no {reason} counted: {report}")


def cli(*args: str):
    from lit_pref.cli import main

    return main(list(args))


# -- the 35 cases ----------------------------------------------------------------------------------------------
def small_max_length_all_identical():
    data = dm(pairs(16), max_length=6, max_prompt_length=5)
    data.setup("fit")  # an error if nothing is left
    dropped(data, "identical_pair")


def chosen_equals_rejected():
    rows = read_pairs(8) + [{**PAIR, "rejected": PAIR["chosen"]}]
    data = dm(write("same.jsonl", rows))
    data.setup("fit")
    dropped(data, "identical_pair")


def truncation_counted():
    data = dm(pairs(16), max_length=12, max_prompt_length=6)
    data.setup("fit")
    report = data.reports["train"]
    if report["truncated_prompts"] or report["truncated_responses"]:
        raise Outcome("counted drop", f"truncated counted: {report}")
    raise Outcome("silent wrong", f"nothing counted: {report}")


def prompt_role_assistant():
    row = {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
           "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}  # fmt: skip
    dm(write("roles.jsonl", [row, row])).setup("fit")
    raise Outcome("silent wrong", "accepted")


def unknown_role():
    row = {"prompt": [{"role": "moderator", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "a"}],
           "rejected": [{"role": "assistant", "content": "b"}]}  # fmt: skip
    dm(write("role2.jsonl", [row, row])).setup("fit")
    raise Outcome("silent wrong", "accepted")


def negative_beta():
    import lit_pref

    lit_pref.DPO(beta=-0.1)
    raise Outcome("silent wrong", "accepted beta < 0")


def ipo_beta_zero():
    import lit_pref

    lit_pref.DPO(beta=0.0, loss_type="ipo")
    raise Outcome("silent wrong", "accepted")


def batch_size_zero():
    dm(pairs(8), batch_size=0)
    raise Outcome("silent wrong", "accepted")


def _cache_run(cache: Path):
    import lightning.pytorch as pl

    import lit_pref

    pl.seed_everything(0)
    module = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache)))
    return fit(module, dm(pairs(32)))[0]


def _corrupted_cache(name: str, corrupt) -> None:
    cache = TMP / f"cache-{name}"
    expected = _cache_run(cache)
    (path,) = cache.glob("*.pt")
    corrupt(path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loss = _cache_run(cache)
    named = any(str(path) in str(w.message) for w in seen)
    if loss == expected and named:
        raise Outcome("handled", f"reported by path and recomputed; step-0 loss {loss:.4f} == {expected:.4f}")
    raise Outcome("silent wrong", f"step-0 loss {loss:.4f} vs {expected:.4f}; reported: {named}")


def cache_wrong_values():
    import torch

    def scale(path):
        saved = torch.load(path, weights_only=True)
        values = saved["values"] if isinstance(saved, dict) else saved[0]
        offsets = saved["offsets"] if isinstance(saved, dict) else saved[1]
        torch.save((values * 3, offsets), path)  # right shapes, wrong values, as the audit wrote it

    _corrupted_cache("values", scale)


def cache_truncated():
    _corrupted_cache("trunc", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))


def cache_garbage():
    _corrupted_cache("garbage", lambda p: p.write_bytes(os.urandom(p.stat().st_size)))


def content_edit_keeps_mtime():
    path = Path(write("edit.jsonl", read_pairs(8)))
    first = dm(str(path))
    first.setup("fit")
    stat = path.stat()
    rows = read_pairs(8)
    rows[0]["chosen"] = rows[0]["chosen"][::-1]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = dm(str(path))
    second.setup("fit")
    if second.datasets["train"][0]["chosen_ids"] != first.datasets["train"][0]["chosen_ids"]:
        raise Outcome("handled", "new rows and a new fingerprint")
    raise Outcome("silent wrong", "stale rows reused")


def broken_jsonl_line():
    dm(write("broken.jsonl", text=json.dumps(PAIR) + "\n{oops\n")).setup("fit")


def empty_file():
    dm(write("empty.jsonl", text="")).setup("fit")


def missing_column_auto():
    import lit_pref

    fit(lit_pref.DPO(), dm(write("nocol.jsonl", [{"prompt": "p", "chosen": "c"}] * 4)))


def missing_column_val_split():
    dm(pairs(8), val=str(DATA / "reviews_sft_val.jsonl")).setup("fit")


def missing_policy_path():
    import lit_pref

    fit(lit_pref.DPO(policy=str(TMP / "no-such-policy")), dm(pairs(8)))


def missing_tokenizer_path():
    dm(pairs(8), tokenizer=str(TMP / "no-such-tokenizer")).setup("fit")


def tokenizer_folder_without_files():
    folder = TMP / "weights-only"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    dm(pairs(8), tokenizer=str(folder)).setup("fit")


def _resume(flag: list[str], name: str) -> None:
    import torch

    every_2 = TMP / "every2.yaml"
    every_2.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                       "      init_args: {every_n_train_steps: 2, save_top_k: -1, save_last: true}\n")  # fmt: skip

    def run(folder: str, *extra: str):
        return cli("fit", "--config", str(REPO / "configs/dpo.yaml"), "--config", str(every_2),
                   "--trainer.max_steps", "6", "--trainer.logger.init_args.save_dir", str(TMP / folder),
                   "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
                   "--data.max_rows", "80", *extra)  # fmt: skip

    straight = run(f"{name}-a").model.policy.state_dict()
    run(f"{name}-b")
    ckpts = TMP / f"{name}-b" / "dpo" / "version_0" / "checkpoints"
    for file in ("last.ckpt", "epoch=1-step=6.ckpt"):
        (ckpts / file).unlink()  # killed after step 4 (mid-epoch)
    resumed = run(f"{name}-b", *flag)
    same = all(torch.equal(v, straight[k]) for k, v in resumed.model.policy.state_dict().items())
    versions = sorted(p.name for p in (TMP / f"{name}-b" / "dpo").iterdir())
    if same and resumed.trainer.global_step == 6 and versions == ["version_0"]:
        raise Outcome("handled", "continued from step 4 in version_0, weights bit-exact")
    raise Outcome(
        "silent wrong", f"step {resumed.trainer.global_step}, versions {versions}, bit-exact {same}"
    )


def ckpt_path_last():
    _resume(["--ckpt_path", "last"], "last")


def resume_flag():
    _resume(["--resume", "true"], "resume")


def killed_export_temp_folder():
    from lit_pref.atomic import atomic_write

    target = TMP / "export"
    atomic_write(target, lambda tmp: (tmp / "config.json").write_text("{}"), directory=True)
    stale = TMP / ".export.tmp-999999999-killed"  # the pid of a writer that no longer runs
    stale.mkdir()
    atomic_write(target, lambda tmp: (tmp / "config.json").write_text('{"v": 2}'), directory=True)
    if stale.exists():
        raise Outcome("silent wrong", "stale temp folder left")
    if json.loads((target / "config.json").read_text()) != {"v": 2}:
        raise Outcome("data lost", "export missing")
    raise Outcome("handled", "stale temp folder removed, export replaced atomically")


def missing_data_file():
    dm(str(TMP / "nope.jsonl")).setup("fit")


def unsupported_extension():
    dm(write("rows.txt", text="hello")).setup("fit")


def null_chosen():
    dm(write("null.jsonl", [PAIR, {**PAIR, "chosen": None}])).setup("fit")


def number_as_text():
    dm(write("num.jsonl", [PAIR, {**PAIR, "chosen": 3}])).setup("fit")


def nan_outcome_csv():
    path = TMP / "outcomes.csv"
    path.write_text("response,outcome\nhello,1.0\nworld,\n")
    dm(str(path), format="outcome").setup("fit")


def propensity_out_of_range():
    rows = [
        {"response": "a", "outcome": 1.0, "propensity": 0.5},
        {"response": "b", "outcome": 0.0, "propensity": 1.5},
    ]
    dm(write("prop.jsonl", rows), format="outcome").setup("fit")


def unknown_columns_key():
    dm(pairs(8), columns={"question": "q"})


def val_fraction_one():
    dm(pairs(8), val_fraction=1.0)


def prompt_length_not_below_max():
    dm(pairs(8), max_length=16, max_prompt_length=16).setup("fit")


def task_without_format():
    dm("task:reviews").setup("fit")


def disabled_adapter_without_lora():
    import lit_pref

    fit(lit_pref.DPO(reference=lit_pref.DisabledAdapter()), dm(pairs(8)))


def precomputed_refreshable():
    import lit_pref

    lit_pref.Precomputed(source=lit_pref.RefreshableCopy())


def mpo_exact_without_matrix():
    import lit_pref

    lit_pref.MPO(oracle=lit_pref.BradleyTerryOracle(lit_pref.TaskReward()), exact=True)


def causal_clip_out_of_range():
    import lit_pref

    lit_pref.CausalPO(clip=2.0)


def fewer_rows_than_batch():
    import lit_pref

    fit(lit_pref.DPO(), dm(pairs(4), batch_size=8))


# name -> (case, what a clear error must mention)
CASES = {
    # silently wrong in the first audit
    "small max_length makes every pair identical": (small_max_length_all_identical, ["data.max_length", "kept 0"]),
    "chosen == rejected rows": (chosen_equals_rejected, []),
    "truncated rows counted": (truncation_counted, []),
    "prompt ends with an assistant message": (prompt_role_assistant, ["row 0", "column 'prompt'", "assistant"]),
    "beta < 0": (negative_beta, ["model.init_args.beta"]),
    "cache rewritten with wrong values": (cache_wrong_values, []),
    "content edit keeping size and mtime": (content_edit_keeps_mtime, []),
    # confusing in the first audit
    "broken JSONL line": (broken_jsonl_line, ["broken.jsonl", "line 2"]),
    "empty file": (empty_file, ["empty.jsonl", "empty"]),
    "missing column under format: auto": (missing_column_auto, ["'rejected'", "DPO"]),
    "missing policy path": (missing_policy_path, ["model.init_args.policy", "no-such-policy"]),
    "missing tokenizer path": (missing_tokenizer_path, ["data.tokenizer", "no-such-tokenizer"]),
    "--ckpt_path last": (ckpt_path_last, []),
    "unknown role in a prompt": (unknown_role, ["row 0", "column 'prompt'", "moderator"]),
    # crashed in the first audit
    "truncated cache file": (cache_truncated, []),
    "garbage cache file": (cache_garbage, []),
    "IPO beta 0": (ipo_beta_zero, ["model.init_args.beta"]),
    "batch_size 0": (batch_size_zero, ["data.batch_size"]),
    # clear before; re-checked
    "killed export leaves a temp folder": (killed_export_temp_folder, []),
    "missing data file": (missing_data_file, ["nope.jsonl", "no such file"]),
    "unsupported file type": (unsupported_extension, ["rows.txt", "unsupported"]),
    "null chosen": (null_chosen, ["row 1", "column 'chosen'"]),
    "number where text is expected": (number_as_text, ["row 1", "column 'chosen'"]),
    "empty outcome in a CSV": (nan_outcome_csv, ["row 1", "column 'outcome'"]),
    "propensity outside (0, 1]": (propensity_out_of_range, ["row 1", "column 'propensity'"]),
    "unknown data.columns field": (unknown_columns_key, ["data.columns", "question"]),
    "val_fraction 1": (val_fraction_one, ["data.val_fraction"]),
    "max_prompt_length >= max_length": (prompt_length_not_below_max, ["data.max_prompt_length", "data.max_length"]),
    "task source without format": (task_without_format, ["task:reviews", "data.format"]),
    "DisabledAdapter without LoRA": (disabled_adapter_without_lora, ["DisabledAdapter", "lora"]),
    "Precomputed around RefreshableCopy": (precomputed_refreshable, ["RefreshableCopy"]),
    "MPO exact without a MatrixOracle": (mpo_exact_without_matrix, ["MatrixOracle"]),
    "CausalPO clip outside (0, 1)": (causal_clip_out_of_range, ["model.init_args.clip"]),
    "fewer rows than batch_size": (fewer_rows_than_batch, ["data.batch_size"]),
    "val split lacks a column train's format needs": (missing_column_val_split, ["reviews_sft_val.jsonl", "'chosen'"]),
    # issue 19 (b): not one of the 35
    "extra: tokenizer folder without tokenizer files": (tokenizer_folder_without_files, ["data.tokenizer", "tokenizer.json"]),
}  # fmt: skip


# -- issue 29: faults lose nothing -------------------------------------------------------------------------------
EVERY_2 = ("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
           "      init_args: {every_n_train_steps: 2, save_top_k: -1, save_last: true}\n")  # fmt: skip
_straight: dict[int, dict] = {}


def fit29(folder: str, steps: int, *extra: str):
    """`fit` of configs/dpo.yaml (80 rows: 5 batches an epoch), a checkpoint every 2 steps; lit_pref errors raise."""
    from lit_pref.commands.lightning import main as lightning_main

    (TMP / "every2.yaml").write_text(EVERY_2)
    return lightning_main(["fit", "--config", str(REPO / "configs/dpo.yaml"), "--config", str(TMP / "every2.yaml"),
                           "--trainer.max_steps", str(steps), "--trainer.logger.init_args.save_dir", str(TMP / folder),
                           "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
                           "--data.max_rows", "80", "--model.init_args.prefix_sharing", "false", *extra])  # fmt: skip


def straight(steps: int) -> dict:
    if steps not in _straight:
        _straight[steps] = fit29(f"straight{steps}", steps).model.policy.state_dict()
    return _straight[steps]


def run_checkpoints(folder: str) -> Path:
    return TMP / folder / "dpo" / "version_0" / "checkpoints"


def same_as_straight(run, steps: int) -> bool:
    import torch

    expected = straight(steps)
    return all(torch.equal(v, expected[k]) for k, v in run.model.policy.state_dict().items())


def _resumed_outcome(folder: str, run, steps: int, how: str) -> None:
    versions = sorted(p.name for p in (TMP / folder / "dpo").iterdir())
    if run.trainer.global_step == steps and versions == ["version_0"] and same_as_straight(run, steps):
        raise Outcome("handled", f"{how}; resumed to step {steps} in version_0, weights bit-exact")
    raise Outcome(
        "data lost", f"step {run.trainer.global_step}, versions {versions}: not the uninterrupted run"
    )


def disk_full_while_checkpointing():
    import errno

    import torch

    real = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if isinstance(path, (str, Path)) and "step=4" in Path(path).name:
            Path(path).write_bytes(b"PK\x03\x04" + bytes(1000))  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)

    torch.save = full_disk
    try:
        fit29("full", 6)
    except Exception as exc:  # noqa: BLE001
        error = exc
    else:
        error = None
    finally:
        torch.save = real
    from lit_pref.cli import user_error

    named = user_error(error)
    if named is None:
        raise error or Outcome("silent wrong", "the failed write went unnoticed")
    folder = run_checkpoints("full")
    if str(folder) not in str(named) or "needs about" not in str(named):
        raise Outcome("confusing error", str(named)[:200])
    left = sorted(p.name for p in folder.iterdir())
    if left != ["epoch=0-step=2.ckpt", "last.ckpt"]:
        raise Outcome("data lost", f"after the failed write the folder holds {left}")
    _resumed_outcome(
        "full", fit29("full", 6, "--resume", "true"), 6, "named the folder and the space, kept step 2"
    )


def _damaged_newest(name: str, damage) -> None:
    import warnings

    fit29(name, 6)
    folder = run_checkpoints(name)
    for file in ("last.ckpt", "epoch=1-step=6.ckpt"):
        (folder / file).unlink()  # killed after step 4
    newest = folder / "epoch=0-step=4.ckpt"
    damage(newest)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = fit29(name, 6, "--resume", "true")
    if not any(str(newest) in str(w.message) for w in seen):
        raise Outcome("silent wrong", "the damaged checkpoint was skipped without a word")
    _resumed_outcome(name, run, 6, f"skipped {newest.name}, named in a warning")


def truncated_newest_checkpoint():
    _damaged_newest("trunc", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))


def garbage_newest_checkpoint():
    _damaged_newest("garbage", lambda p: p.write_bytes(os.urandom(p.stat().st_size)))


def damaged_explicit_ckpt_path():
    fit29("explicit", 2)
    path = run_checkpoints("explicit") / "epoch=0-step=2.ckpt"
    path.write_bytes(path.read_bytes()[:1000])
    fit29("explicit", 4, "--ckpt_path", str(path))


def diverging_run():
    try:
        fit29("diverge", 10, "--model.init_args.lr", "1e6")
    except Exception as exc:
        import torch

        exported = list((TMP / "diverge").rglob("export/model.safetensors"))
        if exported:
            raise Outcome("silent wrong", f"exported {exported[0]} after diverging") from exc
        for ckpt in (TMP / "diverge").rglob("*.ckpt"):
            state = torch.load(ckpt, weights_only=True)["state_dict"]
            if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
                raise Outcome("silent wrong", f"{ckpt} holds non-finite weights") from exc
        raise
    raise Outcome("silent wrong", "trained to the end at lr 1e6")


def bad_steps_skipped():
    import torch

    import lit_pref

    class NanAt(lit_pref.DPO):
        def compute_loss(self, batch):
            loss, metrics = super().compute_loss(batch)
            return (loss * float("nan") if self.global_step in (1, 3) else loss), metrics

    guard = lit_pref.DivergenceGuard(max_bad_steps=2)
    module = NanAt(lr=1e-3)
    trainer(5, callbacks=[guard]).fit(module, dm(pairs(40)))
    finite = all(torch.isfinite(p).all() for p in module.policy.parameters())
    if guard.skipped == 2 and finite and module.trainer.global_step == 5:
        raise Outcome(
            "handled", "2 NaN steps skipped (divergence.max_bad_steps: 2), weights finite, 5 steps done"
        )
    raise Outcome("silent wrong", f"skipped {guard.skipped}, finite weights {finite}")


def export_non_finite_weights():
    import torch

    import lit_pref
    from lit_pref.callbacks.export import export_module

    module = lit_pref.DPO()
    trainer(1).fit(module, dm(pairs(8)))
    with torch.no_grad():
        module.policy.model.norm.weight[0] = float("nan")
    export_module(module, TMP / "nan-export")


def _non_utf8(suffix: str, first: str, second: bytes):
    path = TMP / f"latin1{suffix}"
    path.write_bytes(first.encode() + second)
    dm(str(path)).setup("fit")


def non_utf8_jsonl():
    _non_utf8(".jsonl", json.dumps(PAIR) + "\n", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')


def non_utf8_csv():
    _non_utf8(".csv", "prompt,chosen,rejected\n", b"caf\xe9,a,b\n")


def _truncated_gguf() -> Path:
    import gguf
    import numpy as np

    whole = TMP / "whole.gguf"
    writer = gguf.GGUFWriter(str(whole), "llama")
    writer.add_tensor("a", np.ones((64, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cut = TMP / "cut-gguf" / "model.gguf"
    cut.parent.mkdir(exist_ok=True)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def truncated_gguf_policy():
    from lit_pref.models.loading import load_causal_lm

    load_causal_lm(str(_truncated_gguf()), option="model.init_args.policy")


def truncated_gguf_tokenizer():
    from lit_pref.models.loading import load_tokenizer

    load_tokenizer(str(_truncated_gguf()), option="data.tokenizer")


SAMPLE_RAND = """
policy: {policy}
prompts: {prompts}
sampler: {{class_path: lit_pref.Rand, init_args: {{n: 2}}}}
reward: {{class_path: lit_pref.CallableReward, init_args: {{function: audit_rewards:point_three}}}}
max_new_tokens: 6
chunk_size: 2
seed: 3
accelerator: cpu
"""


def sample29(out: Path, policy: str = "builtin:tiny", prompts: str = "task:constraints", *extra: str) -> Path:
    from lit_pref.commands.sample import main as sample_main

    (TMP / "audit_rewards.py").write_text(
        "def point_three(prompts, responses):\n    return [0.3] * len(responses)\n"
    )
    if str(TMP) not in sys.path:
        sys.path.insert(0, str(TMP))
    config = TMP / "sample_rand.yaml"
    config.write_text(SAMPLE_RAND.format(policy=policy, prompts=prompts))
    sample_main(["--config", str(config), "--out", str(out), *extra])
    return out


def _sampling_refused(out: Path) -> None:
    import lit_pref.commands.sample as sample

    real = sample._module
    sample._module = lambda *a: (_ for _ in ()).throw(
        Outcome("crash", "sampling started before --out was checked")
    )
    try:
        sample29(out)
    finally:
        sample._module = real


def sample_out_read_only():
    if os.geteuid() == 0:  # root can write into a chmod 555 folder; not into /sys
        _sampling_refused(Path("/sys/lit_pref_audit/samples.jsonl"))
    locked = TMP / "read-only"
    locked.mkdir(mode=0o555, exist_ok=True)
    _sampling_refused(locked / "samples.jsonl")


def sample_out_is_a_folder():
    (TMP / "out-folder").mkdir(exist_ok=True)
    _sampling_refused(TMP / "out-folder")


def _template_free_tiny() -> str:
    import shutil

    from lit_pref.models.artifacts import resolve_model_path

    folder = TMP / "tiny-no-template"
    if not folder.exists():
        shutil.copytree(resolve_model_path("builtin:tiny"), folder)
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def sample_without_chat_template():
    from lit_pref.models.loading import load_tokenizer

    base = _template_free_tiny()
    prompts = write(
        "sample-prompts.jsonl", [{"prompt": "Describe the lamp."}, {"prompt": "Describe the tea."}]
    )
    rows = [
        json.loads(line) for line in sample29(TMP / "plain.jsonl", base, prompts).read_text().splitlines()
    ]
    plain = len(load_tokenizer(base)("Describe the lamp.")["input_ids"])
    if len(rows) == 2 and rows[0]["candidates"][0]["prompt_tokens"] == plain:
        raise Outcome("handled", "no chat template: plain-text prompts chosen automatically")
    raise Outcome(
        "silent wrong", f"prompt tokens {rows[0]['candidates'][0]['prompt_tokens']} vs plain {plain}"
    )


def sample_reward_precision():
    rows = sample29(TMP / "precision.jsonl").read_text().splitlines()
    reward = json.loads(rows[0])["candidates"][0]["reward"]
    if reward == 0.3:
        raise Outcome("handled", 'a reward of 0.3 is written as "reward": 0.3')
    raise Outcome("silent wrong", f"a reward of 0.3 is written as {reward!r}")


def sample_prompts_edited_in_place():
    import lit_pref.commands.sample as sample

    prompts = [{"prompt": f"Describe the {item}."} for item in ("lamp", "tea", "hat", "watch", "desk", "bag")]
    source = write("edited.jsonl", prompts)
    real = sample.merge
    sample.merge = lambda *a: (_ for _ in ()).throw(
        KeyboardInterrupt
    )  # killed after every chunk, before merging
    try:
        sample29(TMP / "edited-out.jsonl", "builtin:tiny", source)
    except KeyboardInterrupt:
        pass
    finally:
        sample.merge = real
    prompts[3] = {"prompt": "Describe the pen."}  # same path, same number of rows
    write("edited.jsonl", prompts)
    resumed = sample29(TMP / "edited-out.jsonl", "builtin:tiny", source).read_text()
    fresh = sample29(TMP / "edited-fresh.jsonl", "builtin:tiny", write("edited2.jsonl", prompts)).read_text()
    if resumed == fresh:
        raise Outcome(
            "handled", "the edited chunk was sampled again; output equals a fresh run on the new prompts"
        )
    raise Outcome("silent wrong", "the output mixes rows of the old prompts")


def resume_changed_lr():
    fit29("lr", 4)
    fit29("lr", 6, "--resume", "true", "--model.init_args.lr", "0.01")


def resume_changed_data():
    fit29("data", 4)
    fit29("data", 6, "--resume", "true", "--data.train", str(DATA / "reviews_pairs_chat.jsonl"))


def resume_with_changes_applies():
    fit29("changes", 4)
    run = fit29(
        "changes", 6, "--resume", "true", "--model.init_args.lr", "0.01", "--resume_with_changes", "true"
    )
    base = run.trainer.lr_scheduler_configs[0].scheduler.base_lrs
    group = run.trainer.optimizers[0].param_groups[0]
    if (
        base == [0.01]
        and group["initial_lr"] == 0.01
        and (TMP / "changes/dpo/version_0/resumes.jsonl").is_file()
    ):
        raise Outcome("handled", f"lr 0.01 applied (schedule at {group['lr']:g}), logged to resumes.jsonl")
    raise Outcome("silent wrong", f"the optimizer still runs at base lr {base}")


def resume_keeps_metrics_csv():
    import csv

    csv_logger = ("--trainer.logger.class_path", "lightning.pytorch.loggers.CSVLogger",
                  "--trainer.log_every_n_steps", "1")  # fmt: skip
    fit29("csv", 6, *csv_logger)
    metrics = TMP / "csv/dpo/version_0/metrics.csv"
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    with contextlib.suppress(Exception):
        fit29("csv", 8, *csv_logger, "--resume", "true", "--model.init_args.lr", "0.01")  # refused
    for file in ("last.ckpt", "epoch=1-step=6.ckpt"):
        (run_checkpoints("csv") / file).unlink()
    fit29("csv", 8, *csv_logger, "--resume", "true")
    now = list(csv.DictReader(metrics.read_text().splitlines()))
    kept = all(any(all(r.get(k) == v for k, v in old.items() if v) for r in now) for old in rows)
    if kept and len(now) > len(rows):
        raise Outcome(
            "handled", f"metrics.csv {len(rows)} rows -> {len(now)} after a refused and a real resume"
        )
    raise Outcome("data lost", f"metrics.csv {len(rows)} rows -> {len(now)}")


def unwritable_log_folder():
    (TMP / "a-file").write_text("")
    fit29("unused", 2, "--trainer.logger.init_args.save_dir", str(TMP / "a-file" / "runs"))


def unwritable_checkpoint_folder():
    (TMP / "a-file").write_text("")
    config = TMP / "ckpt-dir.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                      f"      init_args: {{dirpath: {TMP / 'a-file' / 'ckpts'}}}\n")  # fmt: skip
    fit29("unused2", 2, "--config", str(config))


def _build_tiny_large(root: str) -> None:
    """A process that needs builtin:tiny-large (not shipped: built on first use) in the model cache `root`."""
    import os

    os.environ["LIT_PREF_MODEL_CACHE"] = root
    from lit_pref.models.artifacts import resolve_model_path

    resolve_model_path("builtin:tiny-large")


def concurrent_builds():
    """Two processes need the same built-in with an empty cache: one builds, the other waits and reuses it."""
    import multiprocessing as mp

    root = TMP / "models-concurrent"
    context = mp.get_context("spawn")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        procs = [context.Process(target=_build_tiny_large, args=(str(root),)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(600)
    folders = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("tiny-large-")]
    if [p.exitcode for p in procs] != [0, 0] or len(folders) != 1:
        raise Outcome(
            "crash",
            f"exit codes {[p.exitcode for p in procs]}, {len(folders)} build folders {out.getvalue()}",
        )
    raise Outcome("handled", f"one build in {folders[0].name}; the second process waited on its lock")


def build_threads_follow_the_caller():
    """A caller at 1 torch thread (OMP_NUM_THREADS=1 on a busy machine) gets a 1-thread build, keyed as such."""
    import torch

    from lit_pref.models import artifacts

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        n = artifacts.build_threads_for_caller()
    finally:
        torch.set_num_threads(before)
    if n != 1:
        raise Outcome("silent wrong", f"a 1-thread caller builds at {n} threads")
    raise Outcome(
        "handled", "builds run at min(2, the caller's torch threads); the thread count is in the cache key"
    )


CASES_29 = {
    "disk full while checkpointing": (disk_full_while_checkpointing, []),
    "truncated newest checkpoint, --resume": (truncated_newest_checkpoint, []),
    "garbage newest checkpoint, --resume": (garbage_newest_checkpoint, []),
    "--ckpt_path to a damaged checkpoint": (damaged_explicit_ckpt_path, ["--ckpt_path", "epoch=0-step=2.ckpt", "truncated"]),
    "DPO at lr 1e6 (divergence)": (diverging_run, ["diverged in step", "learning rate", "model.init_args.lr"]),
    "NaN steps within divergence.max_bad_steps": (bad_steps_skipped, []),
    "export of non-finite weights": (export_non_finite_weights, ["ExportHF", "model.norm.weight", "NaN"]),
    "non-UTF-8 bytes in a JSONL file": (non_utf8_jsonl, ["latin1.jsonl", "line 2", "byte 16 of the line", "0xe9"]),
    "non-UTF-8 bytes in a CSV file": (non_utf8_csv, ["latin1.csv", "line 2", "byte 4 of the line", "offset 26", "0xe9"]),
    "truncated GGUF as the policy": (truncated_gguf_policy, ["model.init_args.policy", "model.gguf", "truncated"]),
    "truncated GGUF as the tokenizer": (truncated_gguf_tokenizer, ["data.tokenizer", "model.gguf", "truncated"]),
    "sample: out in a read-only folder": (sample_out_read_only, ["--out", "cannot create files"]),
    "sample: out is a folder": (sample_out_is_a_folder, ["--out", "out-folder", "is a folder"]),
    "sample: a model without a chat template": (sample_without_chat_template, []),
    "sample: reward 0.3 written": (sample_reward_precision, []),
    "sample: prompts edited in place, rerun": (sample_prompts_edited_in_place, []),
    "resume after changing lr": (resume_changed_lr, ["model.init_args.lr: 0.0005 -> 0.01", "--resume_with_changes"]),
    "resume after changing data.train": (resume_changed_data, ["data.train", "reviews_pairs_chat.jsonl"]),
    "resume with changes: the new lr applies": (resume_with_changes_applies, []),
    "refused and real resume keep metrics.csv": (resume_keeps_metrics_csv, []),
    "unwritable log folder": (unwritable_log_folder, ["save_dir", "a-file", "not a folder"]),
    "unwritable checkpoint folder": (unwritable_checkpoint_folder, ["ModelCheckpoint dirpath", "not a folder"]),
    "two processes build one built-in at once": (concurrent_builds, []),
    "built-in builds and OMP_NUM_THREADS": (build_threads_follow_the_caller, []),
}  # fmt: skip


def classify(case, must_name: list[str]) -> tuple[str, str]:
    from lit_pref.cli import user_error

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            case()
    except Outcome as outcome:
        return outcome.kind, str(outcome)
    except SystemExit as exc:  # the option parser gave up (an unknown option, ...)
        return "crash", f"SystemExit({exc.code}) from the option parser"
    except Exception as exc:  # noqa: BLE001 - classifying every failure is the point
        error = user_error(exc)
        if error is None:
            return "crash", f"{type(exc).__name__}: {str(exc)[:200]}"
        named = all(s.lower() in str(error).lower() for s in must_name)
        return ("clear error" if named else "confusing error"), str(error)[:200]
    return "silent wrong", "completed without error or check"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("LIT_PREF_CACHE", str(TMP / "cache"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(TMP / "datasets"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    groups = {"issue 16 (35 cases)": CASES, "issue 29 (new cases)": CASES_29}
    counts: dict[str, Counter] = {group: Counter() for group in groups}
    for group, cases in groups.items():
        for name, (case, must_name) in cases.items():
            if args.only not in name:
                continue
            kind, detail = classify(case, must_name)
            if not name.startswith("extra:"):
                counts[group][kind] += 1
            print(f"{kind:18} | {name:48} | {detail}", flush=True)
    print(summary_table(counts))
    bad = sum(c[k] for c in counts.values() for k in ("crash", "silent wrong", "data lost"))
    sys.exit(1 if bad else 0)


KINDS = ("clear error", "confusing error", "counted drop", "handled", "crash", "silent wrong", "data lost")


def summary_table(counts: dict[str, Counter]) -> str:
    """A markdown table: one row per group, one column per outcome (and any other outcome a case reported)."""
    extra = sorted({k for c in counts.values() for k in c} - set(KINDS))
    columns = [*KINDS, *extra]
    lines = ["", "| cases | " + " | ".join(columns) + " | total |", "|---" * (len(columns) + 2) + "|"]
    for group, c in counts.items():
        lines.append(f"| {group} | " + " | ".join(str(c[k]) for k in columns) + f" | {sum(c.values())} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
