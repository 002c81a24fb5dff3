"""`python -m lit_pref sample`: best-of-N rows written atomically, resumable after a kill with identical output."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_pref.commands.sample import main, summary
from lit_pref.errors import ConfigError

CONFIG = """
policy: builtin:tiny
prompts: task:constraints
split: val
reward_sees_preference: true
sampler: {{class_path: lit_pref.PRS, init_args: {{n: 4}}}}
reward: {{class_path: lit_pref.TaskReward, init_args: {{task: constraints}}}}
max_new_tokens: 12
chunk_size: 2
max_rows: {rows}
seed: 7
accelerator: cpu
"""


def config(tmp_path: Path, rows: int = 8) -> str:
    path = tmp_path / "sample.yaml"
    path.write_text(CONFIG.format(rows=rows))
    return str(path)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_hold_every_candidate_and_the_best(tmp_path, tiny_path):
    out = tmp_path / "a.jsonl"
    main(["--config", config(tmp_path, rows=3), "--out", str(out)])
    rows = read(out)
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r in rows:
        rewards = [c["reward"] for c in r["candidates"]]
        assert [c["layer"] for c in r["candidates"]] == [0, 0, 1, 1]
        assert (
            r["best_reward"] == max(rewards)
            and r["best"] == r["candidates"][rewards.index(max(rewards))]["text"]
        )
        assert r["tokens"]["feedback_calls"] == 1 and len(r["feedback"]) == 1
        assert r["tokens"]["generated"] >= sum(c["generated_tokens"] for c in r["candidates"])
    assert summary(rows)["best_reward"] == pytest.approx(sum(r["best_reward"] for r in rows) / 3)
    assert not (tmp_path / "a.jsonl.parts").exists()


def test_a_killed_run_resumes_to_the_uninterrupted_output(tmp_path, tiny_path, capsys):
    cfg = config(tmp_path)
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    main(["--config", cfg, "--out", str(whole)])
    parts = tmp_path / "resumed.jsonl.parts"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lit_pref", "sample", "--config", cfg, "--out", str(resumed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(parts.glob("chunk-*.jsonl")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = len(list(parts.glob("chunk-*.jsonl")))
    assert 1 <= done < 4 and not resumed.exists()  # killed mid-run, after at least one chunk
    capsys.readouterr()
    main(["--config", cfg, "--out", str(resumed)])
    assert f"resuming, {done} of 4 chunks already done" in capsys.readouterr().out
    assert resumed.read_text() == whole.read_text()
    assert [r["index"] for r in read(resumed)] == list(range(8))


def test_bad_options_name_themselves(tmp_path):
    with pytest.raises(ConfigError, match="--chunk_size"):
        main(["--config", config(tmp_path), "--out", str(tmp_path / "x.jsonl"), "--chunk_size", "0"])


def test_parts_of_a_run_with_other_settings_are_not_mixed_in(tmp_path):
    from lit_pref.commands.sample import check_resumable, parser

    args = ["--config", config(tmp_path), "--out", str(tmp_path / "x.jsonl")]
    parts = tmp_path / "x.jsonl.parts"
    check_resumable(parts, parser().parse_args(args), 8)
    check_resumable(parts, parser().parse_args([*args, "--devices", "2"]), 8)  # devices may change
    with pytest.raises(ConfigError, match="other settings \\(chunk_size, seed\\)"):
        check_resumable(parts, parser().parse_args([*args, "--chunk_size", "4", "--seed", "1"]), 8)
