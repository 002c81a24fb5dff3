"""Rebuild built-in models from their recipes: ship them, check the shipped files, or build one as another machine would.

    python tools/build_builtins.py --ship tiny tiny-sft-reviews       # rebuild at 2 threads into lit_pref/models/shipped/
    python tools/build_builtins.py --check tiny-sft-reviews          # rebuild in a temp folder, compare with the shipped one
    python tools/build_builtins.py --out DIR --threads 1 tiny-sft-reviews   # a build as a 1-thread machine makes it

A shipped built-in (lit_pref/models/artifacts.py) is the bytes one machine's build produced; `--check` rebuilds it
here and reports whether the weights are bit-equal and how close its held-out behaviour is (mean NLL of the task's
validation demonstrations). Training amplifies float differences between CPUs, so a rebuild elsewhere is not
bit-equal; its held-out NLL is close.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ship(names: list[str]) -> None:
    """Rebuild each name at BUILD_THREADS into the shipped folder and record its checksums and settings."""
    import torch

    from lit_pref.models import artifacts

    manifest = artifacts.shipped_manifest()
    for name in names:
        recipe = artifacts.find_recipe(name, f"builtin:{name}")
        folder = artifacts.SHIPPED_ROOT / name
        with tempfile.TemporaryDirectory(dir=artifacts.SHIPPED_ROOT.parent) as tmp:
            started = time.perf_counter()
            out = artifacts.build_recipe_into(name, Path(tmp) / name)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.move(str(out), folder)
        manifest[name] = {
            "settings": recipe.settings(name),
            "files": artifacts.folder_checksums(folder),
            "built_with": {"threads": artifacts.BUILD_THREADS, "torch": torch.__version__, "cpu": cpu_model(),
                           "capability": torch.backends.cpu.get_cpu_capability(),
                           "seconds": round(time.perf_counter() - started)},
        }  # fmt: skip
        (artifacts.SHIPPED_ROOT / "manifest.json").write_text(
            json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        )
        print(f"shipped builtin:{name} -> {folder}")


def heldout_nll(folder: Path, name: str) -> float | None:
    """Mean NLL per response token of the recipe's task's validation demonstrations (None for non-task models)."""
    import torch

    from lit_pref.builtin.sft import sft_recipe
    from lit_pref.data.datamodule import PreferenceDataModule
    from lit_pref.models.loading import load_causal_lm
    from lit_pref.models.logprobs import sequence_logps

    if "-sft-" not in name:
        return None
    recipe = sft_recipe(name)
    data = PreferenceDataModule(
        train=f"task:{recipe['task']}", val=f"task:{recipe['task']}", **recipe["data"]
    )
    data.setup("validate")
    model = load_causal_lm(str(folder)).eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for batch in data.val_dataloader():
            out = sequence_logps(model, batch)
            total += float(-out.sum.sum())
            count += float(out.count.sum())
    return total / count


def compare(shipped: Path, rebuilt: Path, name: str) -> dict:
    from safetensors.torch import load_file

    a, b = load_file(shipped / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    diff = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    norm = sum(float((a[k] ** 2).sum()) for k in a) ** 0.5
    return {"bit_equal": all(bool((a[k] == b[k]).all()) for k in a), "relative_weight_difference": diff / norm,
            "heldout_nll_shipped": heldout_nll(shipped, name), "heldout_nll_rebuilt": heldout_nll(rebuilt, name)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="+", help="built-in names without 'builtin:'")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--ship", action="store_true", help="rebuild into lit_pref/models/shipped/")
    what.add_argument("--check", action="store_true", help="rebuild and compare with the shipped files")
    what.add_argument("--out", type=Path, help="rebuild into OUT/<name>")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the build (default 2)")
    args = parser.parse_args(argv)

    from lit_pref.models import artifacts

    threads = args.threads or artifacts.BUILD_THREADS
    if args.ship:
        return ship(args.names)
    for name in args.names:
        root = args.out or Path(tempfile.mkdtemp(prefix="lit_pref_rebuild-"))
        started = time.perf_counter()
        out = artifacts.build_recipe_into(name, root / name, threads)
        print(f"built builtin:{name} at {threads} threads in {time.perf_counter() - started:.0f} s -> {out}")
        if args.check:
            shipped = artifacts.shipped_folder(name)
            if shipped is None:
                raise SystemExit(f"builtin:{name} is not shipped")
            print(json.dumps({"name": name, "threads": threads, **compare(shipped, out, name)}))


if __name__ == "__main__":
    main()
