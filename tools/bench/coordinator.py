"""Processes and the baton protocol: every contender in its own process, stepped one step at a time.

The coordinator starts each contender with `spawn` (its own process, so its peak RSS is its own) and hands out
one step at a time, round-robin in a rotating order (`run_interleaved`), so load from other processes on the
machine hits every contender alike. Protocol over one pipe per worker: the worker sends ("ready", None) once its
models are built, then waits; "go" starts one timed step, which the worker answers with ("step", (seconds,
real tokens)); "finish" after the last step lets it tear down while no other worker is timed, and it answers
("result", dict) or, at any point, ("error", traceback). Solo measurements (`run_solo`) send only the result.

`Stopwatch` is the same baton for a contender that runs in the caller's own process (the GPU check), with
`run_inline` returning what `run_interleaved` returns for one contender.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
import time
import traceback
from pathlib import Path

from tools.bench.contenders import CONTENDERS, SOLO

RAW: list[dict] = []  # every interleaved run's per-step times (--json)


class Baton:
    """The worker side of the coordinator's protocol: wait for 'go', run one step, report its wall time."""

    def __init__(self, conn):
        self.conn = conn
        self.started = 0.0
        self.losses: list[float] = []

    def wait(self) -> None:
        """Block until the coordinator says 'go' (start timing) or 'finish' (after the last step, so that no
        worker's teardown overlaps another's timed step)."""
        if self.conn.recv() == "go":
            self.started = time.perf_counter()

    def step_done(self, real_tokens: int | None = None, loss: float | None = None) -> None:
        self.conn.send(("step", (time.perf_counter() - self.started, real_tokens)))
        if loss is not None:
            self.losses.append(loss)
        self.wait()


class Stopwatch:
    """A baton for a contender in this process: no coordinator to wait for, every step timed back to back.

    `sync` (e.g. torch.cuda.synchronize) runs before each clock read, so the GPU work a step queued counts in
    that step's time."""

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)
        self.started = 0.0
        self.steps: list[tuple[float, int | None]] = []
        self.losses: list[float] = []

    def wait(self) -> None:
        self.sync()
        self.started = time.perf_counter()

    def step_done(self, real_tokens: int | None = None, loss: float | None = None) -> None:
        self.sync()
        now = time.perf_counter()
        self.steps.append((now - self.started, real_tokens))
        if loss is not None:
            self.losses.append(loss)
        self.started = now


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(name: str, cfg: dict, conn) -> None:
    log = os.open(Path(cfg["tmp"]) / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)  # the frameworks' own output stays out of the tables
    os.dup2(log, 2)
    try:
        import torch

        torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        if name in SOLO:
            extra = SOLO[name](cfg)
        else:
            conn.send(("ready", None))
            baton = Baton(conn)
            extra = {**CONTENDERS[name](cfg, baton), "losses": baton.losses}
        conn.send(("result", {**extra, "peak_rss": peak_rss_mb(), "threads_used": torch.get_num_threads()}))
    except BaseException:  # noqa: BLE001 - reported to the coordinator, which prints it
        conn.send(("error", traceback.format_exc()))


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
        results[name] = timed_result(expect(conn, "result", name), times[name], cfg["warmup"])
        process.join()
    RAW.append({"key": cfg["key"], "steps": times, "results": results})
    return results


def timed_result(result: dict, steps: list[tuple[float, int | None]], warmup: int) -> dict:
    """A contender's result with the times and real tokens of its steps after the warm-up."""
    timed = steps[warmup:]
    return {**result, "times": [t for t, _ in timed], "real_tokens": [n for _, n in timed]}


def run_inline(name: str, cfg: dict, sync=None) -> dict:
    """One training contender in this process, timed by a Stopwatch: what `run_interleaved` gives for it (times
    and real tokens after the warm-up), plus the loss of every step. cfg needs "tmp" (its logs)."""
    import torch

    torch.manual_seed(cfg["seed"])  # as a worker does: LoRA's initial weights are drawn from this
    watch = Stopwatch(sync)
    result = CONTENDERS[name](cfg, watch)
    return timed_result({**result, "losses": watch.losses}, watch.steps, cfg["warmup"])
