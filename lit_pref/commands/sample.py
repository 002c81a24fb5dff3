"""`python -m lit_pref sample --config sample.yaml`: best-of-N data generation with a sampler and a reward.

Reads prompts (a file, `hub:owner/name` or `task:<name>`; column `prompt`, optional `preference`), runs the
sampler (lit_pref.Rand, PRand or PRS) from the policy, scores every candidate with the reward, and writes one
JSONL row per prompt: every candidate with its layer, reward and tokens, the feedback written, and the best.

Prompts are processed in chunks of `chunk_size`, each written atomically to `<out>.parts/` as it finishes, under a
name keyed by its prompts' content; a rerun after a crash skips the finished chunks whose prompts are unchanged,
and chunk c always samples with seed + c * CHUNK_SEED_STRIDE, so the result equals an uninterrupted run's.
Prompts are rendered through the tokenizer's chat template, or as plain text when it has none (`text_as_chat`). The chunks go through Lightning's predict loop, which splits them
across `devices` (each rank its share); rank 0 merges the parts into `out` (atomically) at the end.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from lit_pref.atomic import atomic_write, unwritable_reason
from lit_pref.errors import ConfigError, DataError, row_error

CHUNK_SEED_STRIDE = 10_000_019


def parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lit_pref.rewards import Reward
    from lit_pref.sampling import Sampler

    p = ArgumentParser(prog="python -m lit_pref sample", description=__doc__)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with the options below")
    p.add_argument(
        "--policy", type=str, required=True, help="model to sample from (HF folder, hub name, builtin:...)"
    )
    p.add_argument("--tokenizer", type=str | None, default=None, help="tokenizer (default: the policy's)")
    p.add_argument("--text_as_chat", type=bool | None, default=None,
                   help="render each prompt as a user turn of the tokenizer's chat template (true) or tokenize it as "
                        "plain text (false), as data.text_as_chat does for training rows; default: true when the "
                        "tokenizer has a chat template, else false (base models)")  # fmt: skip
    p.add_argument(
        "--prompts", type=str, required=True, help="prompt source: file, hub:owner/name or task:<name>"
    )
    p.add_argument("--split", type=str, default="train", help="split of a hub or task source")
    p.add_argument("--task_options", type=dict | None, default=None, help="options of a task: source")
    p.add_argument("--preference", type=str | None, default=None,
                   help="one common preference for every prompt (default: the rows' preference column, if any)")  # fmt: skip
    p.add_argument("--reward_sees_preference", type=bool | None, default=None,
                   help="score x + z instead of x; default: true for per-row preferences, false for a common one "
                        "(as the official PRS code)")  # fmt: skip
    p.add_subclass_arguments(Sampler, "sampler", required=True, help="lit_pref.Rand, PRand or PRS")
    p.add_subclass_arguments(Reward, "reward", required=True, help="a lit_pref reward")
    p.add_argument(
        "--max_new_tokens", type=int, default=256, help="generation limit (unless sampling sets one)"
    )
    p.add_argument("--chunk_size", type=int, default=32, help="prompts per chunk (the unit of resume)")
    p.add_argument("--batch_size", type=int, default=64, help="sequences per generate call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_rows", type=int | None, default=None, help="use only the first N prompts")
    p.add_argument("--out", type=str, required=True, help="output JSONL file")
    p.add_argument("--accelerator", type=str, default="auto")
    p.add_argument("--devices", type=int | str, default=1)
    p.add_argument("--strategy", type=str, default="auto")
    return p


def read_prompts(spec: str, split: str, task_options: dict | None, common: str | None,
                 max_rows: int | None) -> list[tuple[str, str | None]]:  # fmt: skip
    """(prompt, preference) of every row, checked."""
    from lit_pref.data.sources import load_source

    rows = load_source(spec, split, split, "prompt", task_options)
    if "prompt" not in rows.column_names:
        raise DataError(
            f"{spec}: no column 'prompt' (columns: {rows.column_names}); rename your prompt column"
        )
    has_pref = "preference" in rows.column_names and common is None
    out = []
    for i, row in enumerate(rows):
        if max_rows is not None and i >= max_rows:
            break
        z = common if common is not None else (row["preference"] if has_pref else None)
        for column, value in (("prompt", row["prompt"]), ("preference", z)):
            if not isinstance(value, str) and not (column == "preference" and value is None):
                raise row_error(spec, i, column, f"expected a string, got {value!r:.60}", "Fix the row")
        out.append((row["prompt"], z))
    if not out:
        raise DataError(f"{spec}: no prompts")
    return out


class SampleChunks:
    """What each predict step does: sample one chunk of prompts and write its part file (unless it exists). A part
    file is named by its chunk's number and a digest of its prompts (and of what the reward sees), so a part of
    prompts that were edited since is never taken for the new ones."""

    def __init__(self, cfg, sampler, reward, prompts: list[tuple[str, str | None]], parts: Path):
        self.cfg, self.sampler, self.reward, self.prompts, self.parts = cfg, sampler, reward, prompts, parts
        self.sees = cfg.reward_sees_preference
        if self.sees is None:
            self.sees = cfg.preference is None and any(z for _, z in prompts)
        self.num_chunks = -(-len(prompts) // cfg.chunk_size)

    def rows(self, chunk: int) -> list[tuple[str, str | None]]:
        start = chunk * self.cfg.chunk_size
        return self.prompts[start : start + self.cfg.chunk_size]

    def part(self, chunk: int) -> Path:
        key = hashlib.sha256(json.dumps([self.rows(chunk), self.sees]).encode()).hexdigest()[:16]
        return self.parts / f"chunk-{chunk:06d}-{key}.jsonl"

    def stale_parts(self) -> list[Path]:
        """Part files in the folder that belong to no chunk of these prompts (their prompts were edited)."""
        current = {self.part(c).name for c in range(self.num_chunks)}
        return sorted(p for p in self.parts.glob("chunk-*.jsonl") if p.name not in current)

    def run(self, policy, chunk: int) -> dict[str, float]:
        from lit_pref.commands.crossfit import write_jsonl

        start = chunk * self.cfg.chunk_size
        rows = self.rows(chunk)
        seed = self.cfg.seed + CHUNK_SEED_STRIDE * chunk
        results = self.sampler.run(policy, [p for p, _ in rows], [z for _, z in rows], self.reward,
                                   reward_sees_preference=self.sees, seed=seed)  # fmt: skip
        write_jsonl(self.part(chunk), [{"index": start + i, **r.to_row()} for i, r in enumerate(results)])
        return {"prompts": len(rows), "tokens": sum(r.prompt_tokens + r.generated_tokens for r in results)}


def _module(cfg, chunks: SampleChunks, tokenizer, text_as_chat: bool):
    import lightning.pytorch as pl

    from lit_pref.data.render import Renderer
    from lit_pref.models.loading import load_causal_lm
    from lit_pref.sampling import Policy

    class SampleModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = load_causal_lm(cfg.policy, option="--policy").eval()
            self.tokenizer = tokenizer
            self.done: list[dict[str, float]] = []

        def predict_step(self, batch, batch_idx):
            renderer = Renderer(self.tokenizer, 2**30, 2**30 - 1, text_as_chat=text_as_chat)
            policy = Policy(self.model, self.tokenizer, renderer.full_prompt_ids, cfg.batch_size,
                            cfg.max_new_tokens, synced_gpus=False)  # fmt: skip
            for chunk in batch.tolist():
                self.done.append(chunks.run(policy, int(chunk)))
            return len(batch)

    return SampleModule()


#: options a resumed run must share with the run that wrote the parts (the rest, e.g. devices, may change)
RESUME_KEYS = ("policy", "tokenizer", "prompts", "split", "task_options", "preference", "reward_sees_preference",
               "sampler", "reward", "max_new_tokens", "chunk_size", "seed", "max_rows")  # fmt: skip


def check_resumable(parts: Path, cfg, text_as_chat: bool) -> None:
    """Record the run's settings beside its parts; a rerun with other settings would mix two runs: refuse it.
    (The prompts' content is checked per chunk: see SampleChunks.part.)"""
    given = cfg.as_dict()
    settings = {k: given.get(k) for k in RESUME_KEYS}
    settings = json.loads(json.dumps({**settings, "text_as_chat": text_as_chat}, default=str))
    saved = parts / "settings.json"
    if saved.exists() and json.loads(saved.read_text()) != settings:
        old = json.loads(saved.read_text())
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        raise ConfigError(f"sample: {parts} holds chunks of a run with other settings ({', '.join(changed)}); "
                          "restore them to resume, or delete that folder to start over")  # fmt: skip
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, lambda tmp: Path(tmp).write_text(json.dumps(settings)))


def merge(chunks: SampleChunks, out: Path) -> int:
    """Concatenate the part files in order into `out` (atomically); remove the parts."""
    import shutil

    rows = []
    for chunk in range(chunks.num_chunks):
        rows += chunks.part(chunk).read_text().splitlines()
    atomic_write(out, lambda tmp: Path(tmp).write_text("".join(r + "\n" for r in rows)))
    shutil.rmtree(chunks.parts)
    return len(rows)


def check_out(out: Path) -> None:
    """Refuse an `out` that cannot be written before anything is loaded or sampled."""
    parts = out.with_name(out.name + ".parts")
    if out.is_dir():
        raise ConfigError(
            f"sample: --out {out} is a folder; give the JSONL file to write, e.g. {out / 'samples.jsonl'}"
        )
    if parts.exists() and not parts.is_dir():
        raise ConfigError(
            f"sample: {parts} (where --out's chunks go) is a file; move it away or pick another --out"
        )
    if reason := unwritable_reason(out.parent):
        raise ConfigError(f"sample: --out {out}: {reason}. Give a path in a writable folder")


def chat_or_text(tokenizer, given: bool | None, spec: str) -> bool:
    """`text_as_chat` resolved: as given, or whether the tokenizer has a chat template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if given is None:
        if not has_template:
            print(f"sample: {spec} has no chat template: the prompts are plain text (text_as_chat: false)")
        return has_template
    if given and not has_template:
        raise ConfigError(
            f"sample: --text_as_chat true renders prompts with the tokenizer's chat template, but {spec} has none. "
            "Set text_as_chat: false for plain-text prompts (or leave it unset: chosen from the tokenizer)"
        )
    return given


def main(argv: list[str]) -> None:
    import lightning.pytorch as pl
    import torch

    p = parser()
    cfg = p.parse_args(argv)
    check_counts(cfg)
    out = Path(cfg.out)
    check_out(out)
    from lit_pref.models.loading import load_tokenizer

    spec = cfg.tokenizer or cfg.policy
    tokenizer = load_tokenizer(spec, "--tokenizer" if cfg.tokenizer else "--policy")
    text_as_chat = chat_or_text(tokenizer, cfg.text_as_chat, spec)
    init = p.instantiate_classes(cfg)
    parts = out.with_name(out.name + ".parts")
    prompts = read_prompts(cfg.prompts, cfg.split, cfg.task_options, cfg.preference, cfg.max_rows)
    chunks = SampleChunks(cfg, init.sampler, init.reward, prompts, parts)
    check_resumable(parts, cfg, text_as_chat)
    pending = resume(chunks)
    started = time.monotonic()
    module = _module(cfg, chunks, tokenizer, text_as_chat)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        logger=False,
        enable_model_summary=False,
    )
    if pending:
        loader = torch.utils.data.DataLoader(torch.tensor(pending, dtype=torch.long), batch_size=1)
        trainer.predict(module, loader, return_predictions=False)
    finish(trainer, chunks, out, module.done, time.monotonic() - started)


def check_counts(cfg) -> None:
    for option in ("chunk_size", "batch_size", "max_new_tokens"):
        if getattr(cfg, option) < 1:
            raise ConfigError(f"sample: --{option} must be >= 1, got {getattr(cfg, option)}")


def resume(chunks: SampleChunks) -> list[int]:
    """Remove the stale part files and say what a rerun resumes; the chunks still to sample."""
    if stale := chunks.stale_parts():
        print(
            f"sample: {len(stale)} finished chunks were sampled from other prompts (edited since): sampling them "
            "again"
        )
        for path in stale:
            path.unlink(missing_ok=True)  # several ranks may remove the same file
    pending = [c for c in range(chunks.num_chunks) if not chunks.part(c).exists()]
    if len(pending) < chunks.num_chunks:
        print(
            f"sample: resuming, {chunks.num_chunks - len(pending)} of {chunks.num_chunks} chunks already done"
        )
    return pending


def finish(trainer, chunks: SampleChunks, out: Path, done: list[dict[str, float]], seconds: float) -> None:
    """Once every rank is done, rank 0 merges the parts into `out` and says what this run sampled."""
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return
    missing = [c for c in range(chunks.num_chunks) if not chunks.part(c).exists()]
    if missing:
        raise RuntimeError(f"sample: chunks {missing[:5]} were not written; rerun to finish them")
    n = merge(chunks, out)
    prompts, tokens = sum(d["prompts"] for d in done), sum(d["tokens"] for d in done)
    print(
        f"sample: wrote {n} rows to {out}; this run sampled {prompts} prompts in {seconds:.1f} s "
        f"({prompts / seconds:.2f} prompts/s, {tokens / seconds:.0f} tokens/s, rank 0)"
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean best reward, share of bests from layers >= 1, and tokens per prompt of sample rows."""
    n = len(rows)
    return {
        "best_reward": sum(r["best_reward"] for r in rows) / n,
        "best_from_refinement": sum(r["best_layer"] >= 1 for r in rows) / n,
        "tokens_per_prompt": sum(r["tokens"]["prompt"] + r["tokens"]["generated"] for r in rows) / n,
    }
