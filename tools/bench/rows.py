"""The benchmark's rows: pre-tokenized random token ids, the same for every contender (no tokenizer runs)."""

from __future__ import annotations

import math


def synthetic_rows(n: int, prompt_len: int, completion_len: int, vocab: int, seed: int) -> list[dict]:
    """Random token rows of fixed lengths (ids above the special tokens): identical shapes for everyone."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(k: int) -> list[int]:
        return torch.randint(16, vocab, (k,), generator=g).tolist()

    return [
        {
            "prompt_ids": ids(prompt_len),
            "chosen_ids": ids(completion_len),
            "rejected_ids": ids(completion_len),
        }
        for _ in range(n)
    ]


def variable_rows(n: int, vocab: int, seed: int, max_len: int) -> list[dict]:
    """Random token rows whose lengths vary (prompt 8-64, completions 8 to max_len - 64)."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> list[int]:
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return torch.randint(16, vocab, (k,), generator=g).tolist()

    return [
        {"prompt_ids": ids(8, 64), "chosen_ids": ids(8, max_len - 64), "rejected_ids": ids(8, max_len - 64)}
        for _ in range(n)
    ]


def long_tailed_rows(n: int, vocab: int, seed: int, scale: float = 1.0) -> list[dict]:
    """Rows with realistic, long-tailed lengths: prompts 64-512 tokens (median ~170), chosen and rejected 32-512
    (median ~110) each, log-normal and clipped, drawn with `seed`. `scale` < 1 shrinks every length (the GPU
    check's dry run); 1.0 gives exactly these rows."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(median: float, lo: int, hi: int) -> list[int]:
        k = int(min(max(median * math.exp(0.6 * float(torch.randn((), generator=g))), lo), hi))
        return torch.randint(16, vocab, (max(round(k * scale), 1),), generator=g).tolist()

    return [{"prompt_ids": ids(170, 64, 512), "chosen_ids": ids(110, 32, 512), "rejected_ids": ids(110, 32, 512)}
            for _ in range(n)]  # fmt: skip


def pair_tokens(row: dict) -> int:
    """Real tokens of one pair in the textbook step: prompt + chosen and prompt + rejected, no padding."""
    return 2 * len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])


def bench_rows(cfg: dict) -> list[dict]:
    n = cfg["batch"] * cfg["steps"]
    if cfg.get("long_tailed"):
        return long_tailed_rows(n, cfg["data_vocab"], cfg["seed"], cfg.get("length_scale", 1.0))
    if cfg.get("variable"):
        return variable_rows(n, cfg["data_vocab"], cfg["seed"], cfg["prompt"] + cfg["completion"])
    return synthetic_rows(n, cfg["prompt"], cfg["completion"], cfg["data_vocab"], cfg["seed"])


def step_chunks(rows: list[dict], batch: int, steps: int) -> list[list[dict]]:
    """The rows of each step when every contender takes them in order (`ordered`)."""
    return [rows[s * batch : (s + 1) * batch] for s in range(steps)]


def as_demonstrations(rows: list[dict]) -> list[dict]:
    """Each pair as two demonstrations (prompt+chosen, prompt+rejected): SFT then sees the DPO batch's shape."""
    out = []
    for r in rows:
        out += [
            {"prompt_ids": r["prompt_ids"], "response_ids": c} for c in (r["chosen_ids"], r["rejected_ids"])
        ]
    return out
