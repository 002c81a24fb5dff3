"""Training-step and generation benchmark: lit_pref against TRL's DPOTrainer and a bare PyTorch loop.

    python tools/bench.py --out docs/benchmarks.md            # full run (a few minutes on 2 cores)
    python tools/bench.py --quick                             # smoke run (< 1 min), prints the tables
    python tools/bench.py --token-batches                     # data.batch_tokens: rows, tokens, padding (no model)

Every contender runs in its own process (so its peak RSS is its own) on the same model, the same pre-tokenized
rows and the same batch shapes, with the same torch thread count. A coordinator hands out one step at a time,
round-robin in a rotating order, so load from other processes on the machine hits every contender alike. A step
is the wall time between two consecutive step ends: data loading, collation, forward, backward, optimizer step,
logging - everything the framework does per step. The first `--warmup` steps are discarded.

TRL is not a dependency of lit_pref: install it next to lit_pref in a separate venv (docs/benchmarks.md);
without it the TRL rows are skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# -- workers (one process each) -----------------------------------------------------------------------------


class Baton:
    """The worker side of the coordinator's protocol: wait for 'go', run one step, report its wall time."""

    def __init__(self, conn):
        self.conn = conn
        self.started = 0.0

    def wait(self) -> None:
        """Block until the coordinator says 'go' (start timing) or 'finish' (after the last step, so that no
        worker's teardown overlaps another's timed step)."""
        if self.conn.recv() == "go":
            self.started = time.perf_counter()

    def step_done(self, real_tokens: int | None = None) -> None:
        self.conn.send(("step", (time.perf_counter() - self.started, real_tokens)))
        self.wait()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def long_tailed_rows(n: int, vocab: int, seed: int) -> list[dict]:
    """Rows with realistic, long-tailed lengths: prompts 64-512 tokens (median ~170), chosen and rejected 32-512
    (median ~110) each, log-normal and clipped, drawn with `seed`."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def ids(median: float, lo: int, hi: int) -> list[int]:
        k = int(min(max(median * math.exp(0.6 * float(torch.randn((), generator=g))), lo), hi))
        return torch.randint(16, vocab, (k,), generator=g).tolist()

    return [{"prompt_ids": ids(170, 64, 512), "chosen_ids": ids(110, 32, 512), "rejected_ids": ids(110, 32, 512)}
            for _ in range(n)]  # fmt: skip


def pair_tokens(row: dict) -> int:
    """Real tokens of one pair in the textbook step: prompt + chosen and prompt + rejected, no padding."""
    return 2 * len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])


def bench_rows(cfg: dict) -> list[dict]:
    n = cfg["batch"] * cfg["steps"]
    if cfg.get("long_tailed"):
        return long_tailed_rows(n, cfg["data_vocab"], cfg["seed"])
    if cfg.get("variable"):
        return variable_rows(n, cfg["data_vocab"], cfg["seed"], cfg["prompt"] + cfg["completion"])
    return synthetic_rows(n, cfg["prompt"], cfg["completion"], cfg["data_vocab"], cfg["seed"])


def as_demonstrations(rows: list[dict]) -> list[dict]:
    """Each pair as two demonstrations (prompt+chosen, prompt+rejected): SFT then sees the DPO batch's shape."""
    out = []
    for r in rows:
        out += [
            {"prompt_ids": r["prompt_ids"], "response_ids": c} for c in (r["chosen_ids"], r["rejected_ids"])
        ]
    return out


def run_lit_pref(cfg: dict, baton: Baton, algorithm: str) -> dict:
    """lit_pref through its public path: a PreferenceDataModule (sampler, loader, collator), an algorithm
    LightningModule and Lightning's Trainer - what `python -m lit_pref fit` builds."""
    import datasets
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import TensorBoardLogger

    import lit_pref
    from lit_pref.models.loading import load_tokenizer
    from lit_pref.models.logprobs import MAX_LOGITS_ELEMENTS

    sft = algorithm == "sft"
    rows = bench_rows(cfg)
    if sft and cfg.get("sft_chosen"):  # the ceiling: the chosen side only, as SFT on preferred responses
        rows = [{"prompt_ids": r["prompt_ids"], "response_ids": r["chosen_ids"]} for r in rows]
    elif sft:
        rows = as_demonstrations(rows)
    fmt = "demonstration" if sft else "pairwise"

    class PretokenizedRows(lit_pref.PreferenceDataModule):
        """The real data module over rows that are already token ids (the same ids every contender gets)."""

        def setup(self, stage=None):
            if "train" not in self.datasets:
                self.tokenizer = load_tokenizer(self.tokenizer_spec)
                self.row_format = fmt
                indexed = [{**r, "index": i} for i, r in enumerate(rows)]
                self.datasets["train"] = datasets.Dataset.from_list(indexed)
                self.fingerprints["train"] = f"bench-{cfg['key']}-{fmt}"

    class StepBaton(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            baton.step_done(int(batch["attention_mask"].sum()))

    dm = PretokenizedRows(
        tokenizer=cfg["model"],
        batch_size=cfg["batch"] * (2 if sft and not cfg.get("sft_chosen") else 1),
        shuffle=not cfg.get("ordered", False),
        max_length=cfg["prompt"] + cfg["completion"],
        max_prompt_length=cfg["prompt"],
        seed=cfg["seed"],
        group_by_length=cfg.get("group_by_length", False),
    )
    common = {"tokenizer": cfg["model"], "max_length": dm.max_length, "max_prompt_length": dm.max_prompt_length,
              "lr": 1e-4, "max_logits_elements": cfg.get("max_logits_elements", MAX_LOGITS_ELEMENTS),
              "prefix_sharing": cfg.get("prefix_sharing", False), "pack_tokens": cfg.get("pack_tokens")}  # fmt: skip
    if sft:
        module = lit_pref.SFT(**common)
    else:
        reference = lit_pref.Precomputed(cache_dir=cfg["tmp"]) if algorithm == "dpo_precomputed" else None
        module = lit_pref.DPO(beta=0.1, reference=reference, **common)
    module.configure_model()  # what fit does first; here so RSS before fit counts the models, as for TRL
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=cfg["steps"],
        logger=TensorBoardLogger(cfg["tmp"], name=algorithm),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[StepBaton()],
    )
    rss_before = rss_mb()
    baton.wait()
    trainer.fit(module, datamodule=dm)
    return {"rss_before": rss_before}


def run_trl(cfg: dict, baton: Baton) -> dict:
    """TRL's DPOTrainer with settings equal to lit_pref's (fp32, AdamW, constant LR, no clipping)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lit_pref.models.artifacts import resolve_model_path

    path = resolve_model_path(cfg["model"])

    class PretokenizedDPOTrainer(DPOTrainer):
        """Takes the rows' token ids as they are (TRL would re-tokenize text): same ids as the others."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

        def _get_train_sampler(self, *args, **kwargs):
            if cfg.get("ordered"):  # every contender takes the rows in the same order
                import torch

                return torch.utils.data.SequentialSampler(self.train_dataset)
            return super()._get_train_sampler(*args, **kwargs)

    class StepBaton(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            baton.step_done()

    args = DPOConfig(
        output_dir=cfg["tmp"],
        per_device_train_batch_size=cfg["batch"],
        max_length=cfg["prompt"] + cfg["completion"],
        max_steps=cfg["steps"],
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=0.0,  # lit_pref does not clip by default
        beta=0.1,
        loss_type=["sigmoid"],
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        bf16=False,  # TRL defaults to bf16 autocast; every contender runs fp32
        fp16=False,
        seed=cfg["seed"],
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    trainer = PretokenizedDPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(bench_rows(cfg)),
        processing_class=AutoTokenizer.from_pretrained(path),
        callbacks=[StepBaton()],
    )
    rss_before = rss_mb()
    baton.wait()
    trainer.train()
    return {"rss_before": rss_before}


def run_bare(cfg: dict, baton: Baton) -> dict:
    """A plain PyTorch DPO loop: concatenated forward, full log-softmax + gather, sigmoid loss, AdamW."""
    import copy

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from lit_pref.models.artifacts import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg["model"]), dtype="float32")
    model.train()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    rows, b = bench_rows(cfg), cfg["batch"]

    def logps(m, ids, mask, labels):
        logits = m(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        mask = labels[:, 1:] != -100
        per_token = logits.log_softmax(-1).gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1)
        return (per_token * mask).sum(-1)

    rss_before = rss_mb()
    baton.wait()
    for step in range(cfg["steps"]):
        chunk = rows[step * b : (step + 1) * b]
        pairs = [(r["prompt_ids"], r[k]) for k in ("chosen_ids", "rejected_ids") for r in chunk]
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.zeros(len(pairs), width, dtype=torch.long)  # right padding, as TRL and lit_pref pad
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (p, c) in enumerate(pairs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c, dtype=torch.long)
        policy = logps(model, ids, mask, labels)
        with torch.no_grad():
            ref = logps(reference, ids, mask, labels)
        h = (policy[:b] - ref[:b]) - (policy[b:] - ref[b:])
        loss = -F.logsigmoid(0.1 * h).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        float(loss)  # what a loop that prints its loss pays
        baton.step_done()
    return {"rss_before": rss_before}


def run_matmul_peak(cfg: dict) -> dict:
    """Best fp32 matmul GFLOP/s of this CPU at the benchmark's thread count (the MFU denominator)."""
    import torch

    n = 1536
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(8))
    return {"gflops": 2 * n**3 / best / 1e9}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_generation(cfg: dict) -> dict:
    """Sampling throughput of PolicyModule.complete (the path MPO and other online methods use): KV-cached,
    batched, left-padded; against one prompt at a time and against no KV cache."""
    import lit_pref

    module = lit_pref.DPO(
        tokenizer=cfg["model"], max_length=cfg["prompt"] + cfg["new_tokens"], max_prompt_length=cfg["prompt"]
    )
    module.configure_model()
    tok = module.tokenizer
    rows = synthetic_rows(cfg["prompts"], cfg["prompt"], 1, len(tok), cfg["seed"])
    prompts = [r["prompt_ids"][: cfg["prompt"] - (i % 8)] for i, r in enumerate(rows)]  # ragged: left padding
    eos = tok.eos_token_id
    # The untrained model rarely samples EOS; banning it keeps every completion at new_tokens for equal work.
    module.policy.generation_config.suppress_tokens = [eos]
    results = {}
    variants = [("batched, KV cache", cfg["prompts"], True), ("one prompt at a time, KV cache", 1, True),
                ("batched, no KV cache", cfg["prompts"], False)]  # fmt: skip
    from lit_pref.sampling import SamplingConfig

    module.sample(prompts[:4], SamplingConfig(max_new_tokens=4), batch_size=4)  # warm-up
    for name, batch_size, cache in variants:
        times, tokens = [], 0
        for rep in range(cfg["repeats"]):
            start = time.perf_counter()
            out = (
                module.sample(
                    prompts, SamplingConfig(max_new_tokens=cfg["new_tokens"], seed=rep), batch_size=batch_size
                ).completions
                if cache
                else _no_cache(module, prompts, cfg)
            )
            times.append(time.perf_counter() - start)
            tokens = sum(len(c) for c in out)
        results[name] = {"tokens": tokens, "min": min(times), "median": statistics.median(times)}
    return results


def _no_cache(module, prompts, cfg):
    """`generate` with use_cache=False: every new token re-runs the whole prefix (the quadratic baseline)."""
    from lit_pref.models.batching import left_padded_prompts

    ids, mask = left_padded_prompts(prompts, module.tokenizer.pad_token_id)
    out = module.policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg["new_tokens"], do_sample=True,
                                 use_cache=False, pad_token_id=module.tokenizer.pad_token_id)  # fmt: skip
    return out[:, ids.shape[1] :].tolist()


def run_mpo_scoring(cfg: dict) -> dict:
    """MPO's per-update model work on one fixed rollout (one prompt, K samples): the snapshot and magnet
    log-probs (no_grad) and the policy's forward + backward + AdamW step, with the plain and the prefix-shared
    layout alternating (A B A B) in one process. Sampling is left out: no layout changes it."""
    import copy

    import torch

    from lit_pref.losses import mpo_pairwise_loss
    from lit_pref.models.batching import sequences_batch
    from lit_pref.models.loading import load_causal_lm
    from lit_pref.models.logprobs import sequence_logps
    from lit_pref.models.packing import SequenceLayout

    policy = load_causal_lm(cfg["model"], "float32", "bench")
    policy.train()
    magnet = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    rows = long_tailed_rows(cfg["k"], cfg["data_vocab"], cfg["seed"])
    prompt = (rows[0]["prompt_ids"] * 8)[: cfg["prompt"]]
    responses = [r["chosen_ids"][: cfg["max_response"]] for r in rows]
    seqs = sequences_batch([prompt] * cfg["k"], responses, pad_id=0)
    win_rates = torch.linspace(0.2, 0.8, cfg["k"])[None]
    layouts = {"plain": SequenceLayout(), "prefix-shared": SequenceLayout(True)}
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(cfg["repeats"]):
        for name, layout in layouts.items():
            start = time.perf_counter()
            with torch.no_grad():
                snapshot = sequence_logps(policy, seqs, layout=layout).sum[None]
                anchor = sequence_logps(magnet, seqs, layout=layout).sum[None]
            current = sequence_logps(policy, seqs, layout=layout).sum[None]
            mpo_pairwise_loss(current, snapshot, anchor, win_rates, 0.5, 0.1).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            times[name].append(time.perf_counter() - start)
    tokens = int(seqs["attention_mask"].sum())
    return {"times": times, "tokens": tokens, "prompt": len(prompt), "responses": [len(r) for r in responses]}


def run_real_generation(cfg: dict) -> dict:
    """lit_pref's sampling path (PolicyModule.sample: batched, left-padded, KV cache) against one bare HF
    `generate` call on the same left-padded prompts, alternating."""
    import torch

    import lit_pref
    from lit_pref.models.batching import left_padded_prompts
    from lit_pref.sampling import SamplingConfig

    module = lit_pref.DPO(tokenizer=cfg["model"], max_length=1024, max_prompt_length=512)
    module.configure_model()
    module.policy.eval()
    tok = module.tokenizer
    rows = long_tailed_rows(cfg["prompts"], cfg["data_vocab"], cfg["seed"])
    prompts = [r["prompt_ids"][: cfg["prompt"]] for r in rows]
    module.policy.generation_config.suppress_tokens = [tok.eos_token_id]  # equal work: every sample runs full
    ids, mask = left_padded_prompts(prompts, tok.pad_token_id)
    config = SamplingConfig(max_new_tokens=cfg["new_tokens"], temperature=1.0, top_p=1.0, seed=0)

    def ours() -> int:
        return module.sample(prompts, config, batch_size=len(prompts)).generated_tokens

    def bare() -> int:
        with torch.no_grad():
            out = module.policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg["new_tokens"],
                                         do_sample=True, top_k=0, pad_token_id=tok.pad_token_id)  # fmt: skip
        return out[:, ids.shape[1] :].numel()

    times: dict[str, list[float]] = {"lit_pref sample": [], "bare generate": []}
    tokens = {}
    for _ in range(cfg["repeats"]):
        for name, fn in (("lit_pref sample", ours), ("bare generate", bare)):
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {"times": times, "tokens": tokens}


def run_profile(cfg: dict) -> dict:
    """torch.profiler of one prefix-shared + packed DPO step (policy forward, reference forward, loss,
    backward, AdamW) on the benchmark's first batch, after one warm-up step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import lit_pref
    from lit_pref.data.collate import Collator

    layout = {"prefix_sharing": cfg["prefix_sharing"], "pack_tokens": cfg.get("pack_tokens")}
    module = lit_pref.DPO(tokenizer=cfg["model"], max_length=1024, max_prompt_length=512, lr=1e-4, **layout)
    module.configure_model()
    module.reference.to("cpu")
    optimizer = torch.optim.AdamW(module.policy.parameters(), lr=1e-4)
    rows = [{**r, "index": i} for i, r in enumerate(bench_rows(cfg)[: cfg["batch"]])]
    batch = Collator("pairwise", 0)(rows)

    def step():
        loss, _ = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=cfg.get("rows", 14))
    return {"wall": wall, "table": table, "tokens": int(batch["attention_mask"].sum())}


SOLO = {"mpo scoring": run_mpo_scoring, "real generation": run_real_generation, "profile": run_profile}


CONTENDERS = {
    "lit_pref DPO": lambda cfg, baton: run_lit_pref(cfg, baton, "dpo"),
    "TRL DPOTrainer": run_trl,
    "bare PyTorch DPO": run_bare,
    "lit_pref SFT": lambda cfg, baton: run_lit_pref(cfg, baton, "sft"),
    "lit_pref DPO, precomputed ref": lambda cfg, baton: run_lit_pref(cfg, baton, "dpo_precomputed"),
    "lit_pref DPO, plain logits": lambda cfg, baton: run_lit_pref(
        {**cfg, "max_logits_elements": None}, baton, "dpo"
    ),
    "lit_pref DPO, group_by_length": lambda cfg, baton: run_lit_pref(
        {**cfg, "group_by_length": True}, baton, "dpo"
    ),
    "lit_pref DPO, prefix-shared": lambda cfg, baton: run_lit_pref({**cfg, "prefix_sharing": True}, baton, "dpo"),
    "lit_pref DPO, prefix-shared + packed": lambda cfg, baton: run_lit_pref(
        {**cfg, "prefix_sharing": True, "pack_tokens": cfg["prompt"] + cfg["completion"]}, baton, "dpo"
    ),
    "lit_pref SFT, chosen side": lambda cfg, baton: run_lit_pref({**cfg, "sft_chosen": True}, baton, "sft"),
}


def worker(name: str, cfg: dict, conn) -> None:
    log = os.open(Path(cfg["tmp"]) / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)  # the frameworks' own output stays out of the tables
    os.dup2(log, 2)
    try:
        import torch

        torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        if name == "matmul peak":
            extra = run_matmul_peak(cfg)
        elif name == "generation":
            extra = {"variants": run_generation(cfg)}
        elif name in SOLO:
            extra = SOLO[name](cfg)
        else:
            conn.send(("ready", None))
            extra = CONTENDERS[name](cfg, Baton(conn))
        conn.send(("result", {**extra, "peak_rss": peak_rss_mb(), "threads_used": torch.get_num_threads()}))
    except BaseException:  # noqa: BLE001 - reported to the coordinator, which prints it
        conn.send(("error", traceback.format_exc()))


# -- coordinator ----------------------------------------------------------------------------------------------


def spawn(name: str, cfg: dict, tmp_root: Path):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    cfg = {**cfg, "tmp": str(Path(tempfile.mkdtemp(dir=tmp_root)))}
    process = ctx.Process(target=worker, args=(name, cfg, child), daemon=True)
    process.start()
    return process, parent


def expect(conn, kind: str, name: str):
    got, payload = conn.recv()
    if got == "error":
        raise RuntimeError(f"{name} failed:\n{payload}")
    if got != kind:
        raise RuntimeError(f"{name}: expected {kind}, got {got}")
    return payload


def run_solo(name: str, cfg: dict, tmp_root: Path) -> dict:
    process, conn = spawn(name, cfg, tmp_root)
    result = expect(conn, "result", name)
    process.join()
    return result


def run_interleaved(names: list[str], cfg: dict, tmp_root: Path) -> dict[str, dict]:
    """Start every contender, then step them one at a time, round-robin in a rotating order."""
    workers = {name: spawn(name, cfg, tmp_root) for name in names}
    for name, (_, conn) in workers.items():
        expect(conn, "ready", name)
    times: dict[str, list[tuple[float, int | None]]] = {name: [] for name in names}
    for step in range(cfg["steps"]):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            conn = workers[name][1]
            conn.send("go")
            times[name].append(expect(conn, "step", name))
    results = {}
    for name, (process, conn) in workers.items():  # one at a time: teardown overlaps no timed step
        conn.send("finish")
        timed = times[name][cfg["warmup"] :]
        result = expect(conn, "result", name)
        results[name] = {**result, "times": [t for t, _ in timed], "real_tokens": [n for _, n in timed]}
        process.join()
    RAW.append({"key": cfg["key"], "steps": times, "results": results})
    return results


RAW: list[dict] = []  # every interleaved run's per-step times (--json)


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


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> str:
    out = []
    for package in ("torch", "transformers", "lightning", "trl", "lit_pref"):
        try:
            out.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{package} (not installed)")
    return ", ".join(out)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Report:
    def __init__(self):
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="write the markdown report here (e.g. docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small shapes, few steps (< 1 min)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every contender")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per contender (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded warm-up steps per contender")
    parser.add_argument("--json", help="also write every run's per-step times here")
    parser.add_argument("--model", help="only the real-model section: this HF folder or spec "
                        "(e.g. builtin:smollm2-135m), long-tailed lengths, prefix sharing and packing")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=2, help="--model: pairs per step")
    parser.add_argument("--repeats", type=int, default=3, help="--model: repeats of the MPO and generation timings")
    parser.add_argument("--token-batches", action="store_true", help="only print the batch_tokens table "
                        "(rows, tokens and padding per batch of long-tailed rows; no model runs)")  # fmt: skip
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYTHONPATH", str(REPO))  # workers import this checkout's lit_pref
    sys.path.insert(0, str(REPO))
    from lit_pref.models.artifacts import resolve_model_path

    quick = args.quick
    timed = args.steps or (3 if quick else 10)
    warmup = 1 if quick else args.warmup
    have_trl = importlib.util.find_spec("trl") is not None
    trl_names = ["TRL DPOTrainer"] if have_trl else []
    started = time.perf_counter()
    tmp_root = Path(tempfile.mkdtemp(prefix="lit_pref_bench-"))
    if args.token_batches:
        return print(token_batching_section())
    if args.model:
        return real_main(args, have_trl)
    for spec in ("builtin:tiny", "builtin:tiny-large"):  # build once, before any worker needs them
        resolve_model_path(spec)

    report = Report()
    report.add("# Benchmarks\n")
    report.add(
        f"Generated by `python tools/bench.py{' --quick' if quick else ''} --threads {args.threads}"
        f"{' --out ' + args.out if args.out else ''}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n\n"
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, torch threads per contender: **{args.threads}**\n"
        f"- Versions: {versions()}, Python {platform.python_version()}\n"
        f"- Load average (1/5/15 min) at start: {loadavg()}\n"
        f"- Steps: {warmup} warm-up + {timed} timed per contender, interleaved one step at a time; fp32; AdamW "
        "lr 1e-4, constant; beta 0.1; no gradient clipping, no gradient checkpointing.\n"
    )
    if not have_trl:
        report.add("> TRL is not importable in this interpreter: its rows are skipped (see Setup).\n")
    peak = run_solo("matmul peak", {"threads": args.threads, "seed": 0}, tmp_root)["gflops"]
    report.add(
        f"- Measured fp32 matmul peak (1536^3, {args.threads} thread(s)): **{peak:.1f} GFLOP/s** (MFU denominator)\n"
    )

    base = {"threads": args.threads, "seed": 0, "warmup": warmup, "steps": warmup + timed}
    main_names = [
        "lit_pref DPO",
        *trl_names,
        "bare PyTorch DPO",
        "lit_pref SFT",
        "lit_pref DPO, precomputed ref",
    ]
    if not quick:  # the response-only LM head's before/after at a small vocabulary
        main_names.append("lit_pref DPO, plain logits")
    batch, prompt, completion = (4, 32, 96) if quick else (8, 64, 192)
    models = ["builtin:tiny"] if quick else ["builtin:tiny", "builtin:tiny-large"]
    for spec in models:
        shape = model_shape(spec)
        cfg = {**base, "model": spec, "batch": batch, "prompt": prompt, "completion": completion,
               "data_vocab": shape["vocab"], "key": f"{spec}-{batch}-{prompt}-{completion}"}  # fmt: skip
        results = run_interleaved(main_names, cfg, tmp_root)
        tokens = 2 * batch * (prompt + completion)
        rows = {n: summarize(n, r, tokens, cfg, shape, peak) for n, r in results.items()}
        report.add(
            f"## Training step: `{spec}` (h{shape['hidden']}, {shape['layers']} layers, vocab {shape['vocab']}, "
            f"{shape['matmul_params'] / 1e6:.2f} M matmul params)\n\n{batch} pairs x {prompt + completion} tokens "
            f"(prompt {prompt} + completion {completion}; chosen and rejected in one (2B, T) batch; SFT: the same "
            f"{2 * batch} sequences as demonstrations). Load average after: {loadavg()}.\n"
        )
        report.add(table(list(rows.values())))
        report.add(ratio_lines(rows))

    # Scaling over sequence length and batch size (the small model, so 1024 tokens stay quick).
    spec = "builtin:tiny"
    shape = model_shape(spec)
    scale_names = ["lit_pref DPO", *trl_names]
    lengths = () if quick else (128, 256, 512, 1024)
    batches = () if quick else (2, 8, 16)
    for title, points in (
        ("sequence length (4 pairs)", [(4, 32, t - 32) for t in lengths]),
        ("batch size (256 tokens)", [(b, 64, 192) for b in batches]),
    ):
        if not points:
            continue
        out_rows = []
        for b, p, c in points:
            steps = {"steps": 1 + max(2, timed // 2), "warmup": 1}
            cfg = {**base, **steps, "model": spec, "batch": b, "prompt": p, "completion": c,
                   "data_vocab": shape["vocab"], "key": f"{spec}-{b}-{p}-{c}"}  # fmt: skip
            results = run_interleaved(scale_names, cfg, tmp_root)
            for n, r in results.items():
                row = summarize(n, r, 2 * b * (p + c), cfg, shape, peak)
                row["name"] = f"{n}, {b} pairs x {p + c}"
                out_rows.append(row)
        report.add(f"## Scaling over {title}: `{spec}`\n\nLoad average after: {loadavg()}.\n")
        report.add(table(out_rows))

    if not quick:  # the chunked LM head at a large vocabulary, and length-aware batching
        report.add(large_vocab_section(base, tmp_root, peak, trl_names))
        report.add(length_grouping_section(base, tmp_root, peak))

    gen_cfg = {"threads": args.threads, "seed": 0, "model": "builtin:tiny-large", "prompts": 8 if quick else 32,
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
    report.add("\n".join(lines) + f"\n\nLoad average at the end: {loadavg()}. Total benchmark time "
               f"{time.perf_counter() - started:.0f} s.\n")  # fmt: skip
    report.add(NOTES)
    report.add(SETUP)
    if args.json:
        Path(args.json).write_text(json.dumps(RAW, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(report.parts))
        print(f"wrote {args.out}")


def real_main(args, have_trl: bool) -> None:
    """The real-model sections, most telling first; the report is rewritten after each, so a run cut short
    keeps what it measured."""
    from lit_pref.models.artifacts import resolve_model_path

    resolve_model_path(args.model)
    started = time.perf_counter()
    tmp_root = Path(tempfile.mkdtemp(prefix="lit_pref_bench-"))
    report = Report()
    report.add(
        f"Generated by `python tools/bench.py --model {args.model} --pairs {args.pairs} --steps {args.steps} "
        f"--warmup {args.warmup} --repeats {args.repeats} --threads {args.threads}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n\n"
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, torch threads per contender: **{args.threads}**\n"
        f"- Versions: {versions()}, Python {platform.python_version()}\n"
        f"- Load average (1/5/15 min) at start: {loadavg()}\n"
    )
    sections = [
        lambda: real_table(args.model, args, tmp_root, have_trl, REAL_PAIRS[:2], 1),
        lambda: mpo_section(args.model, args, tmp_root),
        lambda: profile_section(args.model, args, tmp_root),
        lambda: real_table(args.model, args, tmp_root, have_trl, REAL_PAIRS[2:], 3),
        lambda: generation_section(args.model, args, tmp_root),
    ]
    for section in sections:
        report.add(section())
        if args.json:
            Path(args.json).write_text(json.dumps(RAW, indent=1))
        if args.out:
            Path(args.out).write_text("\n".join(report.parts))
    report.add(f"Total time {time.perf_counter() - started:.0f} s; load average at the end: {loadavg()}.\n")
    if args.out:
        Path(args.out).write_text("\n".join(report.parts))
        print(f"wrote {args.out}")


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
        *[f"| {n} | {med[n]:.2f} | {mpo['tokens'] / med[n]:,.0f} | {', '.join(f'{t:.2f}' for t in ts)} |"
          for n, ts in mpo["times"].items()],
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


if __name__ == "__main__":
    main()
