"""The report: model shapes and FLOPs, per-contender summaries, markdown tables, the machine and the versions."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
from pathlib import Path

VERSIONED = ("torch", "transformers", "lightning", "trl", "lit_pref")


def model_shape(spec: str) -> dict:
    from lit_pref.models.artifacts import resolve_model_path

    config = json.loads((Path(resolve_model_path(spec)) / "config.json").read_text())
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) / config["num_attention_heads"]
    per_layer = h * h * (2 + 2 * kv) + 3 * h * config["intermediate_size"]  # q, o, k, v and the gated MLP
    matmul_params = layers * per_layer + h * vocab  # + the LM head (a matmul even when tied)
    return {"hidden": h, "layers": layers, "vocab": vocab, "matmul_params": matmul_params}


def flops_per_token(shape: dict, seq_len: int, passes: float) -> float:
    """Model FLOPs per token: 2N + 4·L·H·T per forward (PaLM's convention); training is 3 forwards' worth."""
    return passes * (2 * shape["matmul_params"] + 4 * shape["layers"] * shape["hidden"] * seq_len)


PASSES = {  # forward-equivalents per token: fwd+bwd = 3, a reference forward = 1 more
    "lit_pref SFT": 3.0,
    "lit_pref DPO, precomputed ref": 3.0,
}


def summarize(name: str, result: dict, tokens: int, cfg: dict, shape: dict, peak_gflops: float) -> dict:
    t = result["times"]
    median = statistics.median(t)
    mfu = tokens / median * flops_per_token(shape, cfg["prompt"] + cfg["completion"], PASSES.get(name, 4.0))
    return {
        "name": name,
        "tokens": tokens,
        "min": min(t),
        "median": median,
        "tok_s": tokens / median,
        "peak_rss": result["peak_rss"],
        "step_mem": result["peak_rss"] - result["rss_before"],
        "mfu": 100 * mfu / (peak_gflops * 1e9),
    }


def table(rows: list[dict], first: str = "contender") -> str:
    head = f"| {first} | tokens/step | step min (s) | step median (s) | tokens/s | peak RSS (MB) | peak - RSS before fit (MB) | MFU |\n"
    head += "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    return head + "".join(
        f"| {r['name']} | {r['tokens']} | {r['min']:.3f} | {r['median']:.3f} | {r['tok_s']:,.0f} | "
        f"{r['peak_rss']:,.0f} | {r['step_mem']:,.0f} | {r['mfu']:.0f}% |\n"
        for r in rows
    )


NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?x?")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; a column of numbers (and "-" for none) is right-aligned."""
    cells = [[str(c) for c in row] for row in rows]

    def numeric(i: int) -> bool:
        column = [row[i] for row in cells]
        return any(c != "-" for c in column) and all(c == "-" or NUMBER.fullmatch(c) for c in column)

    align = ["---:" if numeric(i) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def package_versions(packages=VERSIONED) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    out = {}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def versions(packages=VERSIONED) -> str:
    return ", ".join(
        f"{p} {v}" if v else f"{p} (not installed)" for p, v in package_versions(packages).items()
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Report:
    """Markdown parts, printed as they are added."""

    def __init__(self):
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text)

    def text(self) -> str:
        return "\n".join(self.parts)


def ratio_lines(rows: dict[str, dict]) -> str:
    def r(a: str, b: str, key: str = "tok_s") -> str:
        if a not in rows or b not in rows:
            return "n/a"
        return f"{rows[a][key] / rows[b][key]:.2f}x"

    dpo = "lit_pref DPO"
    lines = [
        f"- lit_pref DPO / TRL tokens/s: **{r(dpo, 'TRL DPOTrainer')}** (target >= 1.5x); peak RSS ratio "
        f"{r(dpo, 'TRL DPOTrainer', 'peak_rss')} (target <= 1.0x)",
        f"- lit_pref DPO / bare loop tokens/s: **{r(dpo, 'bare PyTorch DPO')}** (target >= 0.9x)",
        f"- lit_pref DPO (live reference) / lit_pref SFT tokens/s: **{r(dpo, 'lit_pref SFT')}** (target >= 0.7x)",
        f"- lit_pref DPO (precomputed reference) / lit_pref SFT tokens/s: "
        f"**{r('lit_pref DPO, precomputed ref', 'lit_pref SFT')}** (target >= 0.9x)",
    ]
    if "lit_pref DPO, plain logits" in rows:
        lines.append(
            f"- response-only LM head / plain full logits, tokens/s: {r(dpo, 'lit_pref DPO, plain logits')}; "
            f"peak RSS {r(dpo, 'lit_pref DPO, plain logits', 'peak_rss')}"
        )
    return "\n".join(lines) + "\n"


NOTES = """## What makes the step fast, and where each optimization shows up above

| optimization | evidence in this report |
|---|---|
| one concatenated forward for chosen + rejected (policy and reference) | every DPO row: one (2B, T) forward per model |
| selective log-softmax (gather - logsumexp, no log-softmax copy) | `bare PyTorch DPO` uses a full `log_softmax` + `gather` |
| response-only, chunked LM head (`max_logits_elements`, default 2^24 logits per chunk, recomputed in backward) | `lit_pref DPO` vs `lit_pref DPO, plain logits` (main tables; large-vocabulary table for memory) |
| reference passes under `no_grad` (no autograd state) | `lit_pref DPO` vs `lit_pref SFT` (the reference forward is the whole difference) |
| precomputed reference log-probs (`lit_pref.Precomputed`) | `lit_pref DPO, precomputed ref` vs `lit_pref SFT` |
| length-aware batching (`data.group_by_length`) | the length-aware batching table (padding, real tokens/s) |
| prefix sharing and packing (`prefix_sharing`, `pack_tokens`) | the real-model section (`tools/bench.py --model`) |
| token-budget batches (`data.batch_tokens`) | `tools/bench.py --token-batches` (rows, tokens and padding per batch; docs/prefix_sharing.md) |
| KV-cached, batched, left-padded generation | the generation table (vs one prompt at a time, vs no KV cache) |

Lightning's own per-step cost, profiled once against the bare loop on a tiny batch (2 pairs x 16 tokens): about
2.5 ms per step, nearly all of it in the ten `self.log` calls per step (Lightning's result collection); the
progress bar costs nothing measurable. That is ~2% of a `builtin:tiny` step here and well under 1% of a
`builtin:tiny-large` step, so the metrics were kept.
"""


SETUP = """## Setup and conditions

TRL is only a benchmark contender, never a lit_pref dependency. Put both in a separate venv:

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install torch==2.13.0          # first: any other torch request pulls CUDA wheels
    /tmp/bench-venv/bin/pip install -e . trl
    HF_HUB_OFFLINE=1 /tmp/bench-venv/bin/python tools/bench.py --out docs/benchmarks.md

(`tools/bench.py --quick` is a < 1 min smoke run; without TRL installed its rows are skipped with a note.)

Equal settings: the same model weights, pre-tokenized rows (random token ids, fixed lengths, so no padding and
identical (2B, T) batches), fp32, AdamW (lr 1e-4, constant, no weight decay), no gradient clipping (TRL's
default of 1.0 is turned off), no gradient checkpointing, beta 0.1 sigmoid loss, a frozen copy of the policy as
the reference, logging every 10 steps, progress bars off, no validation, no checkpoints.
Differences that remain: TRL receives the token ids through a `_prepare_dataset` override (it would
re-tokenize text otherwise; not part of the timed step); TRL computes extra metrics each step (entropy, mean
logits, top-1 accuracy) as its default trainer does; the bare loop builds its batches with `torch.tensor` and
uses a textbook full `log_softmax` + `gather`.
MFU = model FLOPs (2N + 4·L·H·T per token per forward, N = matmul parameters incl. the LM head; training = 3
forwards, a live reference +1) per second over the measured fp32 matmul peak; lit_pref's response-only LM head
does less work than this count, which is the point of it.
"""
