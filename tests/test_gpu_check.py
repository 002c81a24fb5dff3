"""tools/gpu_check.py: its CPU dry run exercises every item (so the GPU check cannot rot before a GPU comes), and
its guard records failures and stops runs at the time budget."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

LN2 = math.log(2)


def finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, tiny_path):
    """One dry run for the module; the tests using it are `distributed` (its FSDP2 item runs two processes)."""
    out = tmp_path_factory.mktemp("gpu_check") / "report.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "tools/gpu_check.py", "--dry-run", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.with_suffix(".json").read_text()), out.read_text(), done.stdout


def runs(results: dict, item: str) -> list[dict]:
    return results["items"][item]["runs"]


@pytest.mark.distributed
def test_dry_run_runs_every_item_and_says_where_it_ran(dry_run):
    results, markdown, stdout = dry_run
    assert set(results["items"]) == {"model", "dpo", "drift", "generation", "online", "fsdp2", "trl"}
    meta = results["meta"]
    assert meta["finished"] and meta["runs_out_of_time"] == 0 and meta["settings"]["dry_run"]
    assert meta["environment"]["gpu"] is None and meta["environment"]["versions"]["torch"]
    assert stdout.splitlines()[0].startswith("device: no GPU") and stdout.splitlines()[1].startswith(
        "versions:"
    )
    every = [r for item in results["items"].values() for r in item["runs"]]
    assert every and {r["status"] for r in every} == {"ok"}, [r for r in every if r["status"] != "ok"]
    assert "## Errors" not in markdown


@pytest.mark.distributed
def test_dpo_runs_cover_precisions_layouts_and_tuning(dry_run):
    results, markdown, _ = dry_run
    s = results["meta"]["settings"]
    dpo = runs(results, "dpo")
    combos = {(r["tuning"], r["precision"], r["layout"]) for r in dpo}
    assert len(dpo) == len(combos) == 2 * 3 * 3
    for r in dpo:
        assert finite(r["step_median_s"]) and r["step_median_s"] > 0 and finite(r["tokens_per_s"])
        assert len(r["losses"]) == s["warmup"] + s["timed"] and all(finite(x) for x in r["losses"])
        # the policy starts as its reference: DPO's first loss is log 2 in every precision and layout
        assert r["losses"][0] == pytest.approx(LN2, abs=5e-3), r["label"]
        assert r["peak_mem_mb"] is None  # CUDA memory only
    table = markdown.split("## DPO step")[1].split("\n## ")[0]
    assert sum(line.startswith(("| full |", "| LoRA |")) for line in table.splitlines()) == 18


@pytest.mark.distributed
def test_drift_compares_bf16_with_fp32_and_layouts_agree(dry_run):
    results, _, _ = dry_run
    drift = runs(results, "drift")
    assert sum(r["kind"] == "precision" for r in drift) == 2 * 3 * 2  # 2 tunings x 3 layouts x 2 bf16 modes
    for r in drift:
        assert finite(r["max_abs_diff"]) and r["steps"] == len(r["losses"]) == len(r["reference_losses"])
    layouts = [r for r in drift if r["kind"] == "layout"]
    assert len(layouts) == 4
    for r in layouts:  # prefix sharing and packing give the plain layout's losses (fp32, float error only)
        assert r["max_abs_diff"] < 1e-4, r


@pytest.mark.distributed
def test_generation_counts_every_batch_size(dry_run):
    results, _, _ = dry_run
    s = results["meta"]["settings"]
    gen = runs(results, "generation")
    assert [r["dtype"] for r in gen] == ["float32", "bfloat16"]
    for r in gen:
        assert [g["batch"] for g in r["rows"]] == [1, 8, 32]
        for g in r["rows"]:  # EOS is suppressed: every completion runs its full length
            assert g["new_tokens"] == g["batch"] * s["gen_new_tokens"]
            assert finite(g["tokens_per_s"]) and g["tokens_per_s"] > 0


@pytest.mark.distributed
def test_online_steps_split_into_generation_and_update(dry_run):
    results, _, _ = dry_run
    online = {r["method"]: r for r in runs(results, "online")}
    assert set(online) == {"MPO", "IRFT"}
    for r in online.values():
        assert len(r["steps"]) == results["meta"]["settings"]["online_steps"] and r["generated_tokens"] > 0
        for step in r["steps"]:
            parts = [step[k] for k in ("generation_s", "rollout_rest_s", "scoring_s", "update_s")]
            # generation runs inside the rollout, the rollout and scoring inside the step
            assert all(finite(x) and x >= 0 for x in parts) and step["generation_s"] > 0


@pytest.mark.distributed
def test_fsdp2_losses_equal_the_unsharded_run(dry_run):
    results, _, _ = dry_run
    fsdp = {r["label"]: r for r in runs(results, "fsdp2")}
    single = fsdp.pop("one process, no sharding")["losses"]
    assert [r["devices"] for r in fsdp.values()] == [1, 2]
    for r in fsdp.values():
        assert r["backend"] == "gloo" and r["equal"] and r["losses"] == pytest.approx(single, abs=1e-4)


@pytest.mark.distributed
def test_trl_runs_only_where_it_is_importable(dry_run):
    import importlib.util

    results, _, _ = dry_run
    trl = results["items"]["trl"]
    if importlib.util.find_spec("trl") is None:
        assert trl["runs"] == [] and "not importable" in trl["notes"][0]
    else:
        assert len(trl["runs"]) == 6


def test_a_failing_run_is_reported_and_the_budget_stops_the_rest(tmp_path):
    from tools.bench import gpu
    from tools.bench.gpu_report import render

    check = gpu.Check(gpu.DRY_RUN, tmp_path / "r.md", budget_s=1.0, started=time.monotonic())
    check.item("x", "X")

    def boom():
        raise ValueError("bad shape 7")

    check.run("x", "fails", boom)
    check.run("x", "works", lambda: {"value": 1.0})
    check.run("x", "cut short", lambda: time.sleep(30))  # the alarm stops it at the budget
    check.run("x", "too late", lambda: {"value": 2.0})
    check.run("x", "computed", lambda: {"value": 3.0}, timed=False)
    status = [(r["label"], r["status"]) for r in check.items["x"]["runs"]]
    assert status == [("fails", "error"), ("works", "ok"), ("cut short", "skipped"), ("too late", "skipped"),
                      ("computed", "ok")]  # fmt: skip
    assert "ValueError: bad shape 7" in check.items["x"]["runs"][0]["error"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["meta"]["runs_out_of_time"] == 2
    markdown = render(saved)
    assert (
        "**stopped at the budget**" in markdown
        and "ValueError: bad shape 7" in markdown.split("## Errors")[1]
    )


def test_a_model_that_does_not_resolve_runs_as_its_shape_with_random_weights(tmp_path, tiny_path):
    import shutil
    from dataclasses import replace
    from pathlib import Path

    from lit_pref.models.loading import load_causal_lm
    from tools.bench import gpu

    shape = tmp_path / "shape"  # what tools/gpu_wheels.sh keeps of SmolLM2: config and tokenizer, no weights
    shape.mkdir()
    for f in Path(tiny_path).iterdir():
        if f.suffix in (".json", ".jinja"):
            shutil.copy(f, shape / f.name)
    settings = replace(gpu.DRY_RUN, model="builtin:no-such-model")
    check = gpu.Check(settings, tmp_path / "r.md", budget_s=300, started=time.monotonic(), shape=shape)
    gpu.prepare_model(check)
    (run,) = check.items["model"]["runs"]
    assert run["status"] == "ok" and run["random_weights"], run
    assert "random weights" in check.items["model"]["notes"][0] and check.settings.model == run["path"]
    model, tiny = load_causal_lm(check.settings.model), load_causal_lm("builtin:tiny")
    ours, theirs = dict(model.named_parameters()), dict(tiny.named_parameters())
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
