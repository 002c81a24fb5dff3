"""Re-run the issue-16 audit: 35 bad inputs and failure conditions, each classified by what lit_pref does.

    OMP_NUM_THREADS=1 python tools/audit_inputs.py [--only NAME_SUBSTRING]

Outcomes: `clear error` (a lit_pref error whose message names what it must: file, line, row, column or option),
`confusing error` (a lit_pref error that does not), `counted drop` (rows dropped and reported with their reason),
`handled` (the condition is detected and dealt with correctly: cache recomputed, stale data reloaded, resume
continued, temp folder removed), `crash` (any other exception), `silent wrong` (it ran and the result is wrong),
`data lost` (an earlier result was destroyed). Everything runs offline in a temporary folder, on the built-in tiny
model and the example data in configs/data.
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


def classify(case, must_name: list[str]) -> tuple[str, str]:
    from lit_pref.cli import user_error

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            case()
    except Outcome as outcome:
        return outcome.kind, str(outcome)
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
    counts: Counter = Counter()
    for name, (case, must_name) in CASES.items():
        if args.only not in name:
            continue
        kind, detail = classify(case, must_name)
        if not name.startswith("extra:"):
            counts[kind] += 1
        print(f"{kind:16} | {name:48} | {detail}", flush=True)
    print(f"\n{sum(counts.values())} cases: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    sys.exit(1 if counts["crash"] or counts["silent wrong"] or counts["data lost"] else 0)


if __name__ == "__main__":
    main()
