"""The GPU check: every GPU claim of lit_pref measured in one command, inside a time budget (7.5 min).

    python tools/gpu_check.py                     # first CUDA device, builtin:smollm2-135m
    python tools/gpu_check.py --dry-run           # CPU, builtin:tiny, two steps per item, gloo (CI runs this)
    python tools/gpu_check.py --out $OUT/gpu_check.md   # report there, its JSON beside it (gpu_check.json)

On the first CUDA device, a few steps each: DPO step time, real tokens/s and peak memory in fp32, bf16-mixed and
bf16-true, plain / prefix-shared / prefix-shared + packed layouts, full fine-tune and LoRA; the bf16 runs'
losses against fp32 over the same steps (and each layout's against plain); the throughput of
lit_pref.sampling.generate at batch 1, 8 and 32; one MPO and one IRFT run of a few rollouts + updates, split into
generation, scoring and update time; FSDP2 (ModelParallelStrategy, NCCL) on one device, and on two when there
are two, with its losses against the unsharded run's; TRL's DPOTrainer at the same settings when TRL is
importable. Each run is guarded (a failure is reported with its error, the rest go on); the report is rewritten
after every run, and no run starts once the budget is spent, so the check stops itself in time with what it has.
docs/performance.md says how to run it on a lent GPU machine (tools/gpu_wheels.sh) and where its numbers go.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here, imports included

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout: lit_pref and tools.bench

from tools.bench.cli import prepare_environment  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, builtin:tiny, two steps per item, gloo")
    parser.add_argument("--out", type=Path, default=None, help="the markdown report (default: "
                        "runs/gpu_check/gpu_check.md, or gpu_check_dry_run.md); the JSON goes beside it")  # fmt: skip
    parser.add_argument(
        "--model", help="another model spec (HF folder, hub name) instead of builtin:smollm2-135m"
    )
    parser.add_argument("--shape", type=Path, default=REPO / ".whl" / "smollm2-135m-shape", help="config + "
                        "tokenizer of the model: random weights of this shape where the model does not resolve "
                        "(tools/gpu_wheels.sh makes it)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check, from start "
                        "(default 450: with a wheel install before it, under 8 minutes)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_environment()
    from tools.bench import gpu

    settings = gpu.DRY_RUN if args.dry_run else gpu.GPU
    if args.model:
        settings = replace(settings, model=args.model)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run on a GPU machine, or use --dry-run", file=sys.stderr)
            return 2
    out = args.out or Path("runs/gpu_check") / ("gpu_check_dry_run.md" if args.dry_run else "gpu_check.md")
    check = gpu.Check(
        settings, out.resolve(), args.budget, STARTED, shape=None if args.dry_run else args.shape
    )
    check.meta.update(
        command=shlex.join(["python", "tools/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        environment=gpu.environment(settings),
    )
    print_environment(check.meta["environment"])
    results = gpu.run_check(check)
    print(f"wrote {out} and {out.with_suffix('.json')} ({results['meta']['wall_s']:.0f} s)")
    failed = [r for item in results["items"].values() for r in item["runs"] if r["status"] == "error"]
    return 1 if failed or any(item.get("error") for item in results["items"].values()) else 0


def print_environment(env: dict) -> None:
    """The GPU and the versions, first, so even a check that dies at once says where it ran."""
    gpu = env.get("gpu") or "no GPU (dry run on CPU)"
    print(f"device: {gpu}" + (f", {env['gpu_count']} CUDA device(s), CUDA {env['cuda']}, NCCL {env['nccl']}"
                              if env.get("gpu") else ""))  # fmt: skip
    print("versions: " + ", ".join(f"{p} {v or '(not installed)'}" for p, v in env["versions"].items())
          + f", Python {env['python']}", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
