"""What each contender runs, in the process it is given: lit_pref through its public path, TRL's DPOTrainer,
a bare PyTorch loop, and the solo measurements (matmul peak, generation, MPO scoring, a profile, online steps).

A training contender takes (cfg, baton) and calls `baton.wait()` once before its first step and
`baton.step_done(real_tokens, loss)` at the end of every step; the baton is the coordinator's (one process per
contender, tools/bench/coordinator.py) or a Stopwatch in the caller's own process (the GPU check). cfg is a
plain dict (it crosses process boundaries); options the CPU benchmark never sets default to its settings:
accelerator cpu, one device, fp32, all weights trained, lr 1e-4.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

from tools.bench.rows import as_demonstrations, bench_rows, long_tailed_rows, synthetic_rows


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trainer_options(cfg: dict) -> dict:
    """Lightning Trainer arguments for cfg's accelerator, devices, precision and (`fsdp_backend`) FSDP2 through
    ModelParallelStrategy, as configs/strategy/fsdp2.yaml sets it."""
    devices = cfg.get("devices", 1)
    options = {"accelerator": cfg.get("accelerator", "cpu"), "devices": devices,
               "precision": cfg.get("precision", "32-true")}  # fmt: skip
    if cfg.get("fsdp_backend"):
        from lightning.pytorch.strategies import ModelParallelStrategy

        options["strategy"] = ModelParallelStrategy(
            data_parallel_size=devices,
            tensor_parallel_size=1,
            save_distributed_checkpoint=False,
            process_group_backend=cfg["fsdp_backend"],
            timeout=timedelta(
                seconds=cfg.get("dist_timeout_s", 1800)
            ),  # a rank that never comes fails the run
        )
    return options


def run_lit_pref(cfg: dict, baton, algorithm: str) -> dict:
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
            loss = outputs["loss"].detach()
            if trainer.world_size > 1:  # the global batch's loss, as one process would compute it
                loss = trainer.strategy.reduce(loss.clone(), reduce_op="mean")
            baton.step_done(int(batch["attention_mask"].sum()), float(loss))

    devices = cfg.get("devices", 1)
    per_device = cfg["batch"] // devices  # FSDP2: every rank takes its share of the same global batch
    dm = PretokenizedRows(
        tokenizer=cfg["model"],
        batch_size=per_device * (2 if sft and not cfg.get("sft_chosen") else 1),
        shuffle=not cfg.get("ordered", False),
        max_length=cfg["prompt"] + cfg["completion"],
        max_prompt_length=cfg["prompt"],
        seed=cfg["seed"],
        group_by_length=cfg.get("group_by_length", False),
    )
    common = {"tokenizer": cfg["model"], "max_length": dm.max_length, "max_prompt_length": dm.max_prompt_length,
              "lr": cfg.get("lr", 1e-4), "max_logits_elements": cfg.get("max_logits_elements", MAX_LOGITS_ELEMENTS),
              "prefix_sharing": cfg.get("prefix_sharing", False), "pack_tokens": cfg.get("pack_tokens"),
              "lora": cfg.get("lora")}  # fmt: skip
    if sft:
        module = lit_pref.SFT(**common)
    else:
        reference = lit_pref.Precomputed(cache_dir=cfg["tmp"]) if algorithm == "dpo_precomputed" else None
        module = lit_pref.DPO(beta=0.1, reference=reference, **common)
    if cfg.get("prebuild", True) and not cfg.get("fsdp_backend"):
        module.configure_model()  # what fit does first; here so RSS before fit counts the models, as for TRL
    trainer = pl.Trainer(
        **trainer_options(cfg),
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


def trl_lora_config(lora: dict):
    """lit_pref's LoRA settings (model.init_args.lora) as peft's LoraConfig, for TRL."""
    from peft import LoraConfig

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                      target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")  # fmt: skip


def run_trl(cfg: dict, baton) -> dict:
    """TRL's DPOTrainer with settings equal to lit_pref's (AdamW, constant LR, no clipping, the same precision:
    bf16-mixed is TRL's bf16 autocast, bf16-true a bfloat16 model trained as it is)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lit_pref.models.artifacts import resolve_model_path

    path = resolve_model_path(cfg["model"])
    precision = cfg.get("precision", "32-true")

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
        learning_rate=cfg.get("lr", 1e-4),
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=0.0,  # lit_pref does not clip by default
        beta=0.1,
        loss_type=["sigmoid"],
        use_cpu=cfg.get("accelerator", "cpu") == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        bf16=precision == "bf16-mixed",  # TRL defaults to bf16 autocast; the CPU benchmark runs fp32
        fp16=False,
        seed=cfg["seed"],
    )
    if not args.use_cpu:  # one device, as every other contender: HF's Trainer wraps several in DataParallel
        args.device  # noqa: B018 - sets args._n_gpu to the device count (a cached property, computed once)
        args._n_gpu = 1
    dtype = "bfloat16" if precision == "bf16-true" else "float32"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    trainer = PretokenizedDPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(bench_rows(cfg)),
        processing_class=AutoTokenizer.from_pretrained(path),
        callbacks=[StepBaton()],
        peft_config=trl_lora_config(cfg["lora"]) if cfg.get("lora") else None,
    )
    rss_before = rss_mb()
    baton.wait()
    trainer.train()
    return {"rss_before": rss_before}


def run_bare(cfg: dict, baton) -> dict:
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
        baton.step_done(None, float(loss))  # float(loss): what a loop that prints its loss pays
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


def run_generate_batches(cfg: dict, sync=None) -> list[dict]:
    """Throughput of `lit_pref.sampling.generate` (the online methods' path: batched, KV-cached, left-padded)
    at each batch size of cfg["batches"], the model in cfg["dtype"] on cfg["device"]; EOS is suppressed, so
    every completion runs cfg["new_tokens"] tokens (equal work at every batch size)."""
    from lit_pref.models.loading import load_causal_lm, load_tokenizer
    from lit_pref.sampling import SamplingConfig, generate

    sync = sync or (lambda: None)
    tok = load_tokenizer(cfg["model"])
    model = load_causal_lm(cfg["model"], cfg["dtype"], "bench").to(cfg["device"]).eval()
    model.generation_config.suppress_tokens = [tok.eos_token_id]
    vocab = min(len(tok), model.config.vocab_size)
    rows = long_tailed_rows(max(cfg["batches"]), vocab, cfg["seed"], cfg.get("length_scale", 1.0))
    prompts = [r["prompt_ids"][: cfg["prompt"]] for r in rows]
    generate(model, tok, prompts[:1], SamplingConfig(max_new_tokens=4), batch_size=1)  # warm-up
    out = []
    for batch in cfg["batches"]:
        times = []
        for rep in range(cfg["repeats"]):
            sync()
            start = time.perf_counter()
            gen = generate(model, tok, prompts[:batch], SamplingConfig(max_new_tokens=cfg["new_tokens"], seed=rep),
                           batch_size=batch)  # fmt: skip
            sync()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        out.append({"dtype": cfg["dtype"], "batch": batch, "prompt_tokens": gen.prompt_tokens,
                    "new_tokens": gen.generated_tokens, "seconds": seconds,
                    "tokens_per_s": gen.generated_tokens / seconds})  # fmt: skip
    return out


def online_module(cfg: dict, method: str):
    """(module, data module) of a short MPO or IRFT run as configs/real/mpo.yaml and irft.yaml set them, with
    one optimizer step per rollout: MPO self-play on the reviews prompts (K samples, the cyclic VADER oracle),
    IRFT on the reviews demonstrations (greedy negatives from the stage reference)."""
    import lit_pref
    from lit_pref.sampling import SamplingConfig

    spec, new = cfg["model"], cfg["new_tokens"]
    lengths = {"max_length": cfg["max_prompt"] + new, "max_prompt_length": cfg["max_prompt"]}
    common = {
        "tokenizer": spec,
        "policy": spec,
        "lr": cfg.get("lr", 1e-5),
        "updates_per_rollout": 1,
        **lengths,
    }
    data = {
        "tokenizer": spec,
        "text_as_chat": True,
        "batch_size": cfg["prompts"],
        "seed": cfg["seed"],
        **lengths,
    }
    if method == "MPO":
        reward = lit_pref.TaskReward(task="reviews")
        oracle = lit_pref.CyclicStyleOracle(reward=reward, tau=0.25, weight=1.0)
        module = lit_pref.MPO(oracle=oracle, num_samples=cfg["k"], eta=1.0, alpha=0.1,
                              sampling=SamplingConfig(max_new_tokens=new), **common)  # fmt: skip
        dm = lit_pref.PreferenceDataModule(train="task:reviews", format="prompt",
                                           task_options={"seed": cfg["seed"], "num_rows": 64}, **data)  # fmt: skip
    else:
        module = lit_pref.IRFT(beta=0.1, stages=1, sampling=SamplingConfig(do_sample=False, max_new_tokens=new),
                               **common)  # fmt: skip
        dm = lit_pref.PreferenceDataModule(train=cfg["demonstrations"], max_rows=64, **data)
    return module, dm


def run_online(cfg: dict, method: str, sync=None) -> dict:
    """A few steps of MPO or IRFT through Lightning's Trainer, each step split into generation (every
    `module.sample` call: lit_pref.sampling.generate), the rest of the rollout (the frozen models' log-probs),
    scoring (the oracle) and the update (the policy's forward, backward and optimizer step, and the logging)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    sync = sync or (lambda: None)
    module, dm = online_module(cfg, method)
    spans: dict[str, float] = {}
    steps: list[dict] = []

    def timed(fn, key: str):
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                spans[key] = spans.get(key, 0.0) + time.perf_counter() - start

        return wrapper

    for key in ("sample", "rollout", "score"):  # instance attributes shadow the methods the loop calls
        setattr(module, key, timed(getattr(module, key), key))

    class StepSplit(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync()
            spans.clear()
            spans["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            step = time.perf_counter() - spans.pop("start")
            gen, rollout, score = (spans.get(k, 0.0) for k in ("sample", "rollout", "score"))
            steps.append({"generation_s": gen, "rollout_rest_s": rollout - gen, "scoring_s": score,
                          "update_s": step - rollout - score, "step_s": step, "loss": float(outputs["loss"])})  # fmt: skip

    trainer = pl.Trainer(
        **trainer_options(cfg),
        max_steps=cfg["steps"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[StepSplit()],
    )
    trainer.fit(module, datamodule=dm)
    return {"method": method, "steps": steps, "generated_tokens": module.tokens.generated,
            "prompt_tokens": module.tokens.prompt}  # fmt: skip


#: measurements that run alone in their process (no baton): name -> fn(cfg) -> result
SOLO = {
    "matmul peak": run_matmul_peak,
    "generation": lambda cfg: {"variants": run_generation(cfg)},
    "mpo scoring": run_mpo_scoring,
    "real generation": run_real_generation,
    "profile": run_profile,
}


#: training contenders: name -> fn(cfg, baton) -> result
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
    "lit_pref DPO, prefix-shared": lambda cfg, baton: run_lit_pref(
        {**cfg, "prefix_sharing": True}, baton, "dpo"
    ),
    "lit_pref DPO, prefix-shared + packed": lambda cfg, baton: run_lit_pref(
        {**cfg, "prefix_sharing": True, "pack_tokens": cfg["prompt"] + cfg["completion"]}, baton, "dpo"
    ),
    "lit_pref SFT, chosen side": lambda cfg, baton: run_lit_pref({**cfg, "sft_chosen": True}, baton, "sft"),
}
