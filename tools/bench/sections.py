"""The benchmark's sections: each runs its contenders through the coordinator and returns its markdown."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from tools.bench.coordinator import run_interleaved, run_solo
from tools.bench.report import loadavg, model_shape, ratio_lines, summarize, table
from tools.bench.rows import bench_rows, long_tailed_rows, pair_tokens, variable_rows

# -- the CPU benchmark (tools/bench.py [--quick]) --------------------------------------------------------------


def training_section(spec: str, names: list[str], base: dict, tmp_root: Path, peak: float, shape_args) -> str:
    """The main table of one model: every contender on fixed-length rows, with the targets' ratios."""
    batch, prompt, completion = shape_args
    shape = model_shape(spec)
    cfg = {**base, "model": spec, "batch": batch, "prompt": prompt, "completion": completion,
           "data_vocab": shape["vocab"], "key": f"{spec}-{batch}-{prompt}-{completion}"}  # fmt: skip
    results = run_interleaved(names, cfg, tmp_root)
    tokens = 2 * batch * (prompt + completion)
    rows = {n: summarize(n, r, tokens, cfg, shape, peak) for n, r in results.items()}
    return "\n".join([
        f"## Training step: `{spec}` (h{shape['hidden']}, {shape['layers']} layers, vocab {shape['vocab']}, "
        f"{shape['matmul_params'] / 1e6:.2f} M matmul params)\n\n{batch} pairs x {prompt + completion} tokens "
        f"(prompt {prompt} + completion {completion}; chosen and rejected in one (2B, T) batch; SFT: the same "
        f"{2 * batch} sequences as demonstrations). Load average after: {loadavg()}.\n",
        table(list(rows.values())),
        ratio_lines(rows),
    ])  # fmt: skip


def scaling_section(title: str, points: list[tuple[int, int, int]], names: list[str], base: dict, timed: int,
                    tmp_root: Path, peak: float) -> str:  # fmt: skip
    """lit_pref DPO (and TRL) over (pairs, prompt, completion) points on the small model."""
    spec = "builtin:tiny"
    shape = model_shape(spec)
    out_rows = []
    for b, p, c in points:
        steps = {"steps": 1 + max(2, timed // 2), "warmup": 1}
        cfg = {**base, **steps, "model": spec, "batch": b, "prompt": p, "completion": c,
               "data_vocab": shape["vocab"], "key": f"{spec}-{b}-{p}-{c}"}  # fmt: skip
        results = run_interleaved(names, cfg, tmp_root)
        for n, r in results.items():
            row = summarize(n, r, 2 * b * (p + c), cfg, shape, peak)
            row["name"] = f"{n}, {b} pairs x {p + c}"
            out_rows.append(row)
    return f"## Scaling over {title}: `{spec}`\n\nLoad average after: {loadavg()}.\n\n" + table(out_rows)


def generation_table(threads: int, quick: bool, tmp_root: Path, started: float) -> str:
    gen_cfg = {"threads": threads, "seed": 0, "model": "builtin:tiny-large", "prompts": 8 if quick else 32,
               "prompt": 32, "new_tokens": 16 if quick else 64, "repeats": 1 if quick else 2}  # fmt: skip
    gen = run_solo("generation", gen_cfg, tmp_root)
    lines = [
        f"## Generation: `{gen_cfg['model']}`, {gen_cfg['prompts']} ragged prompts of <= {gen_cfg['prompt']} tokens, "
        f"{gen_cfg['new_tokens']} sampled tokens each (`PolicyModule.complete`, the online methods' sampler)\n",
        "| variant | new tokens | min (s) | median (s) | tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in gen["variants"].items():
        lines.append(
            f"| {name} | {r['tokens']} | {r['min']:.3f} | {r['median']:.3f} | {r['tokens'] / r['median']:,.0f} |"
        )
    return "\n".join(lines) + (f"\n\nLoad average at the end: {loadavg()}. Total benchmark time "
                               f"{time.perf_counter() - started:.0f} s.\n")  # fmt: skip


def build_large_vocab_model(tmp_root: Path, vocab: int) -> str:
    """The tiny model's shape with a large vocabulary (random weights, the tiny tokenizer): where the LM head
    and log-softmax dominate memory, as with 32k-256k-token tokenizers."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from lit_pref.models.artifacts import resolve_model_path

    tiny = resolve_model_path("builtin:tiny")
    folder = tmp_root / f"tiny-vocab{vocab}"
    config = AutoConfig.from_pretrained(tiny)
    config.vocab_size = vocab
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(folder)
    return str(folder)


def large_vocab_section(base: dict, tmp_root: Path, peak: float, trl_names: list[str]) -> str:
    vocab = 65536
    spec = build_large_vocab_model(tmp_root, vocab)
    shape = model_shape(spec)
    b, p, c = 2, 32, 224
    cfg = {**base, "model": spec, "batch": b, "prompt": p, "completion": c, "data_vocab": 1800,
           "key": f"vocab{vocab}-{b}-{p}-{c}", "steps": 4, "warmup": 1}  # fmt: skip
    names = ["lit_pref DPO", "lit_pref DPO, plain logits", *trl_names, "bare PyTorch DPO"]
    results = run_interleaved(names, cfg, tmp_root)
    rows = [summarize(n, r, 2 * b * (p + c), cfg, shape, peak) for n, r in results.items()]
    return (
        f"## Large vocabulary: tiny shape with vocab {vocab} (random weights), {b} pairs x {p + c} tokens\n\n"
        "`lit_pref DPO` scores only response positions through the LM head, at most 2^24 logits at a time "
        "(chunks recomputed in backward); `plain logits` (`max_logits_elements: null`) materializes the full "
        f"(2B, T, V) logits. Load average after: {loadavg()}.\n\n" + table(rows)
    )


def length_grouping_section(base: dict, tmp_root: Path, peak: float) -> str:
    """Padding with and without `group_by_length` on rows of varying length, and what it does to a step."""
    from lit_pref.data.collate import Collator
    from lit_pref.data.loader import EpochShuffleSampler, LengthGroupedSampler

    spec, b, max_len = "builtin:tiny", 8, 512
    shape = model_shape(spec)
    n_batches = 100
    rows = variable_rows(b * n_batches, shape["vocab"], 0, max_len)
    for i, r in enumerate(rows):
        r["index"] = i
    lengths = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    collate = Collator("pairwise", 0)
    padding = {}
    for name, sampler in (("shuffled", EpochShuffleSampler(len(rows), 0)),
                          ("group_by_length", LengthGroupedSampler(lengths, b, 0))):  # fmt: skip
        order = list(sampler)
        real = total = 0
        for s in range(0, len(order) - b + 1, b):
            mask = collate([rows[i] for i in order[s : s + b]])["attention_mask"]
            real, total = real + int(mask.sum()), total + mask.numel()
        padding[name] = (real, total)
    cfg = {**base, "model": spec, "batch": b, "prompt": 64, "completion": max_len - 64, "variable": True,
           "data_vocab": shape["vocab"], "key": f"variable-{b}-{max_len}", "steps": 9, "warmup": 1}  # fmt: skip
    results = run_interleaved(["lit_pref DPO", "lit_pref DPO, group_by_length"], cfg, tmp_root)
    lines = [
        f"## Length-aware batching: {len(rows)} pairs of 24-{max_len} tokens, batches of {b} pairs, `{spec}`\n",
        "| sampler | real tokens | padded tokens | padding | lit_pref DPO: real (non-padding) tokens/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, key in (("shuffled", "lit_pref DPO"), ("group_by_length", "lit_pref DPO, group_by_length")):
        real, total = padding[name]
        r = results[key]
        speed = sum(r["real_tokens"]) / sum(r["times"])
        lines.append(f"| {name} | {real:,} | {total:,} | {100 * (1 - real / total):.1f}% | {speed:,.0f} |")
    return "\n".join(lines) + (
        "\n\nPadding counts every batch of one epoch of each sampler; tokens/s is over the first "
        f"{cfg['steps'] - 1} steps after one warm-up. Load average after: {loadavg()}.\n"
    )


def token_batching_section(n_rows: int = 512, batch_size: int = 8, pack_tokens: int = 1024) -> str:
    """Rows per batch, tokens per batch and padding of one epoch of `long_tailed_rows`, batched by rows and by
    tokens (`data.batch_tokens`, with the budget of batch_size average pairs), plain and prefix-shared + packed;
    counted from the collated batches and their layouts, no model runs."""
    from statistics import mean

    from lit_pref.data.collate import Collator
    from lit_pref.data.loader import EpochShuffleSampler, LengthGroupedSampler, TokenBatchSampler
    from lit_pref.models.packing import SequenceLayout, plan_layout

    rows = long_tailed_rows(n_rows, 1809, 0)
    for i, r in enumerate(rows):
        r["index"] = i
    tokens = [pair_tokens(r) for r in rows]
    lengths = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows]
    budget = round(batch_size * mean(tokens) / 256) * 256
    collate = Collator("pairwise", 0)
    by_rows = list(EpochShuffleSampler(n_rows, 0))
    grouped = list(LengthGroupedSampler(lengths, batch_size, 0))
    starts = range(0, n_rows, batch_size)
    samplers = {
        f"batch_size {batch_size}": [by_rows[s : s + batch_size] for s in starts],
        f"batch_size {batch_size}, group_by_length": [grouped[s : s + batch_size] for s in starts],
        f"batch_tokens {budget}": list(TokenBatchSampler(tokens, budget, 0)),
    }
    lines = [
        "| batching | layout | batches | rows per batch: mean (min-max) | real tokens per batch: mean (min-max) "
        "| forward tensor tokens per batch: mean (max) | padding |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, batches in samplers.items():
        for layout in (SequenceLayout(), SequenceLayout(True, pack_tokens)):
            real, forward, kept = [], [], 0  # real tokens, the forward's tensor size, its non-padding tokens
            for b in batches:
                batch = collate([rows[i] for i in b])
                real.append(sum(tokens[i] for i in b))
                ids = batch["input_ids"] if layout.plain else plan_layout(batch, layout).input_ids
                forward.append(ids.numel())
                kept += int((ids != 0).sum())  # token ids are >= 16; 0 is padding
            sizes = [len(b) for b in batches]
            padding = 1 - kept / sum(forward)
            shown = "plain" if layout.plain else f"prefix-shared + packed ({pack_tokens})"
            lines.append(
                f"| {name} | {shown} | {len(batches)} | {mean(sizes):.1f} ({min(sizes)}-{max(sizes)}) | "
                f"{mean(real):,.0f} ({min(real):,}-{max(real):,}) | {mean(forward):,.0f} ({max(forward):,}) | "
                f"{100 * padding:.1f}% |"
            )
    return "\n".join(lines) + "\n"


# -- real model (--model) -------------------------------------------------------------------------------------

#: contenders run two at a time (A B A B; two fp32 copies of a 135 M model each fit next to the other jobs of a
#: shared machine), each pair sharing one contender so that every ratio comes from one interleaved run
REAL_PAIRS = [
    ("lit_pref DPO", "lit_pref DPO, prefix-shared"),
    ("lit_pref DPO, prefix-shared + packed", "TRL DPOTrainer"),
    ("lit_pref DPO, prefix-shared", "lit_pref DPO, prefix-shared + packed"),
    ("lit_pref DPO, prefix-shared + packed", "bare PyTorch DPO"),
    ("lit_pref DPO, prefix-shared + packed", "lit_pref SFT, chosen side"),
]


def real_table(spec: str, args, tmp_root: Path, have_trl: bool, pairs: list, first_run: int) -> str:
    shape = model_shape(spec)
    b, warmup = args.pairs, args.warmup
    cfg = {"threads": args.threads, "seed": 0, "warmup": warmup, "steps": warmup + (args.steps or 3),
           "model": spec, "batch": b, "prompt": 512, "completion": 512, "data_vocab": shape["vocab"],
           "long_tailed": True, "ordered": True, "key": f"real-{b}"}  # fmt: skip
    rows = bench_rows(cfg)
    steps = [rows[s * b : (s + 1) * b] for s in range(cfg["steps"])]
    pair_tok = [sum(pair_tokens(r) for r in chunk) for chunk in steps]
    chosen_tok = [sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in chunk) for chunk in steps]
    prompts = [len(r["prompt_ids"]) for r in rows]
    responses = [len(r[k]) for r in rows for k in ("chosen_ids", "rejected_ids")]
    lines = [
        f"### Runs {first_run}-{first_run + len(pairs) - 1}: `{spec}` (h{shape['hidden']}, {shape['layers']} "
        f"layers, vocab {shape['vocab']}), {b} pair(s) per step, long-tailed lengths\n",
        f"Rows: `long_tailed_rows(seed 0)`, prompts {min(prompts)}-{max(prompts)} tokens (median "
        f"{statistics.median(prompts):.0f}), responses {min(responses)}-{max(responses)} (median "
        f"{statistics.median(responses):.0f}); every contender takes the same rows in the same order (no shuffling), "
        f"{warmup} warm-up + {cfg['steps'] - warmup} timed steps. tokens/s = real (non-padding) tokens of the "
        "textbook step (prompt + chosen and prompt + rejected; SFT: prompt + chosen) / step time, median over "
        "steps; so prefix sharing and packing show as speed, never as fewer tokens. Contenders run two at a time, "
        "interleaved one step at a time (A B A B), each in its own process.\n",
        "| run | contender | step median (s) | real tokens/s (median) | peak RSS (MB) | load before -> after |",
        "|---|---|---:|---:|---:|---|",
    ]
    rates: dict[tuple[int, str], float] = {}
    rss: dict[tuple[int, str], float] = {}
    for run, pair in enumerate(pairs, start=first_run):
        names = [n for n in pair if have_trl or n != "TRL DPOTrainer"]
        if len(names) < 2:
            continue
        before = loadavg()
        results = run_interleaved(names, cfg, tmp_root)
        after = loadavg()
        for name in names:
            times = results[name]["times"]
            tok = chosen_tok if name.startswith("lit_pref SFT") else pair_tok
            rate = statistics.median(t / s for t, s in zip(tok[warmup:], times))
            rates[run, name], rss[run, name] = rate, results[name]["peak_rss"]
            lines.append(f"| {run} | {name} | {statistics.median(times):.2f} | {rate:,.0f} | "
                         f"{results[name]['peak_rss']:,.0f} | {before} -> {after} |")  # fmt: skip
            print(lines[-1], [round(t, 2) for t in times], flush=True)
    lines.append("")

    def ratio(a: str, b: str, key=rates) -> str:
        runs = [r for r, _ in key if (r, a) in key and (r, b) in key]
        return f"{key[runs[0], a] / key[runs[0], b]:.2f}x (run {runs[0]})" if runs else "n/a"

    best = "lit_pref DPO, prefix-shared + packed"
    candidates = [
        f"- prefix-shared + packed DPO / TRL DPOTrainer tokens/s: **{ratio(best, 'TRL DPOTrainer')}** "
        f"(target >= 1.5x); peak RSS {ratio(best, 'TRL DPOTrainer', rss)} (target <= 1.0x)",
        f"- prefix-shared DPO / plain lit_pref DPO tokens/s: **{ratio('lit_pref DPO, prefix-shared', 'lit_pref DPO')}**"
        f" (target >= 1.2x); peak RSS {ratio('lit_pref DPO, prefix-shared', 'lit_pref DPO', rss)} (target <= 1.0x)",
        f"- prefix-shared + packed / prefix-shared tokens/s: {ratio(best, 'lit_pref DPO, prefix-shared')}",
        f"- prefix-shared + packed DPO / bare PyTorch DPO tokens/s: {ratio(best, 'bare PyTorch DPO')}",
        f"- prefix-shared + packed DPO / lit_pref SFT (chosen side, the ceiling) tokens/s: "
        f"{ratio(best, 'lit_pref SFT, chosen side')}",
    ]
    lines += [line for line in candidates if "n/a" not in line]  # ratios of the runs in this table
    return "\n".join(lines) + "\n"


def mpo_section(spec: str, args, tmp_root: Path) -> str:
    shape = model_shape(spec)
    cfg = {"threads": args.threads, "seed": 0, "model": spec, "data_vocab": shape["vocab"], "k": 4, "prompt": 384,
           "max_response": 128, "repeats": args.repeats}  # fmt: skip
    before = loadavg()
    mpo = run_solo("mpo scoring", cfg, tmp_root)
    med = {n: statistics.median(t) for n, t in mpo["times"].items()}
    lines = [
        f"### MPO, K = 4 samples of one prompt: `{spec}`\n",
        f"One prompt of {mpo['prompt']} tokens, K = 4 responses of {mpo['responses']} tokens "
        f"({mpo['tokens']} real tokens in the plain layout). Timed: MPO's model work per update (snapshot and "
        "magnet log-probs, policy forward + backward + AdamW step); the plain and the prefix-shared layout "
        f"alternate in one process (A B A B), {args.repeats} times each. Load {before} -> {loadavg()}.\n",
        "| layout | median (s) | real tokens/s | all times (s) |",
        "|---|---:|---:|---|",
        *[
            f"| {n} | {med[n]:.2f} | {mpo['tokens'] / med[n]:,.0f} | {', '.join(f'{t:.2f}' for t in ts)} |"
            for n, ts in mpo["times"].items()
        ],
        f"\n- prefix-shared / plain MPO update: **{med['plain'] / med['prefix-shared']:.2f}x** (target >= 1.5x); "
        f"peak RSS of the process (both layouts) {mpo['peak_rss']:,.0f} MB\n",
    ]
    return "\n".join(lines)


def profile_section(spec: str, args, tmp_root: Path) -> str:
    shape = model_shape(spec)
    cfg = {"threads": args.threads, "seed": 0, "model": spec, "data_vocab": shape["vocab"], "batch": args.pairs,
           "steps": 1, "long_tailed": True, "prefix_sharing": True, "pack_tokens": 1024}  # fmt: skip
    before = loadavg()
    prof = run_solo("profile", cfg, tmp_root)
    return "\n".join([
        f"### Profile of the final step: prefix-shared + packed DPO, `{spec}`, {args.pairs} pair(s)\n",
        f"One step after a warm-up step on the benchmark's first batch, {prof['tokens']} real tokens, "
        f"{prof['wall']:.2f} s under torch.profiler ({args.threads} thread; load {before} -> {loadavg()}). "
        "Top operators by self CPU time:\n",
        "```",
        prof["table"].rstrip(),
        "```\n",
    ])  # fmt: skip


def generation_section(spec: str, args, tmp_root: Path) -> str:
    shape = model_shape(spec)
    cfg = {"threads": args.threads, "seed": 0, "model": spec, "data_vocab": shape["vocab"], "prompts": 4,
           "prompt": 128, "new_tokens": 32, "repeats": args.repeats}  # fmt: skip
    before = loadavg()
    gen = run_solo("real generation", cfg, tmp_root)
    med = {n: statistics.median(t) for n, t in gen["times"].items()}
    return "\n".join([
        f"### Generation: `{spec}`, 4 prompts of <= 128 tokens, 32 sampled tokens each\n",
        "| path | new tokens | median (s) | tokens/s | all times (s) |",
        "|---|---:|---:|---:|---|",
        *[f"| {n} | {gen['tokens'][n]} | {med[n]:.2f} | {gen['tokens'][n] / med[n]:,.1f} | "
          f"{', '.join(f'{t:.2f}' for t in gen['times'][n])} |" for n in med],
        f"\nAlternating A B, {args.repeats} times each; load {before} -> {loadavg()}.\n",
    ])  # fmt: skip
