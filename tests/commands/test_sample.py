"""`python -m lit_pref sample`: best-of-N rows written atomically, resumable after a kill with identical output."""

import json
import os
import re
import shutil
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


@pytest.mark.slow
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
    check_resumable(parts, parser().parse_args(args), True)
    check_resumable(parts, parser().parse_args([*args, "--devices", "2"]), True)  # devices may change
    with pytest.raises(ConfigError, match="other settings \\(chunk_size, seed\\)"):
        check_resumable(parts, parser().parse_args([*args, "--chunk_size", "4", "--seed", "1"]), True)
    with pytest.raises(ConfigError, match="other settings \\(text_as_chat\\)"):
        check_resumable(parts, parser().parse_args(args), False)


# -- issue 29: out checked first, plain-text prompts, full-precision rewards, parts keyed by content -------------
RAND = """
policy: {policy}
prompts: {prompts}
sampler: {{class_path: lit_pref.Rand, init_args: {{n: 2}}}}
reward: {{class_path: lit_pref.CallableReward, init_args: {{function: tests.commands.test_sample:point_three}}}}
max_new_tokens: 6
chunk_size: 2
seed: 3
accelerator: cpu
"""


def point_three(prompts, responses):
    return [0.3] * len(responses)


def rand_config(tmp_path: Path, policy: str = "builtin:tiny", prompts: str = "task:constraints") -> str:
    path = tmp_path / "rand.yaml"
    path.write_text(RAND.format(policy=policy, prompts=prompts))
    return str(path)


def no_sampling(monkeypatch):
    import lit_pref.commands.sample as sample

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(sample, "_module", refuse)
    monkeypatch.setattr("lit_pref.models.loading.load_tokenizer", refuse)


def test_an_out_that_cannot_be_written_is_refused_before_anything_loads(tmp_path, monkeypatch):
    no_sampling(monkeypatch)
    cfg = rand_config(tmp_path)
    with pytest.raises(
        ConfigError, match=re.escape(f"sample: --out {tmp_path} is a folder; give the JSONL file")
    ):
        main(["--config", cfg, "--out", str(tmp_path)])
    (tmp_path / "a-file").write_text("")
    with pytest.raises(
        ConfigError, match=re.escape(f"--out {tmp_path / 'a-file' / 'x.jsonl'}: ") + ".* is a file"
    ):
        main(["--config", cfg, "--out", str(tmp_path / "a-file" / "x.jsonl")])
    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: make creating files there fail as on a read-only folder
        import lit_pref.atomic as atomic

        real = atomic.tempfile.mkstemp
        monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda dir=None, **kw: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")) if str(dir) == str(locked) else real(dir=dir, **kw))  # fmt: skip
    with pytest.raises(
        ConfigError, match=rf"--out {re.escape(str(locked))}/x.jsonl: cannot create files in .*denied"
    ):
        main(["--config", cfg, "--out", str(locked / "x.jsonl")])


def template_free_copy(tiny_path: str, folder: Path) -> str:
    """builtin:tiny without its chat template: a base model as far as `sample` can tell."""
    shutil.copytree(tiny_path, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def test_a_model_without_a_chat_template_samples_plain_text_prompts(tmp_path, tiny_path, capsys):
    from lit_pref.models.loading import load_tokenizer

    base = template_free_copy(tiny_path, tmp_path / "base")
    prompts = write_prompts(tmp_path / "p.jsonl", ["Describe the lamp.", "Describe the tea."])
    out = tmp_path / "plain.jsonl"
    main(["--config", rand_config(tmp_path, base, prompts), "--out", str(out)])
    assert "has no chat template: the prompts are plain text" in capsys.readouterr().out
    plain = len(load_tokenizer(base)("Describe the lamp.")["input_ids"])
    assert [c["prompt_tokens"] for c in read(out)[0]["candidates"]] == [plain, plain]
    assert read(out)[0]["candidates"][0]["reward"] == 0.3  # full precision: not 0.30000001192092896
    chat = tmp_path / "chat.jsonl"
    main(["--config", rand_config(tmp_path, "builtin:tiny", prompts), "--out", str(chat)])
    assert read(chat)[0]["candidates"][0]["prompt_tokens"] > plain  # the template's turn markers
    with pytest.raises(
        ConfigError, match=r"--text_as_chat true renders prompts with the tokenizer's chat template"
    ):
        main(["--config", rand_config(tmp_path, base, prompts), "--out", str(out), "--text_as_chat", "true"])


def write_prompts(path: Path, prompts: list[str]) -> str:
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return str(path)


def test_parts_of_edited_prompts_are_sampled_again(tmp_path, tiny_path, monkeypatch, capsys):
    import lit_pref.commands.sample as sample

    prompts = [f"Describe the {item}." for item in ("lamp", "tea", "hat", "watch", "desk", "bag")]
    source = write_prompts(tmp_path / "p.jsonl", prompts)
    cfg, out = rand_config(tmp_path, prompts=source), tmp_path / "out.jsonl"
    real_merge = sample.merge
    monkeypatch.setattr(
        sample, "merge", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt)
    )  # killed at the end
    with pytest.raises(KeyboardInterrupt):
        main(["--config", cfg, "--out", str(out)])
    monkeypatch.setattr(sample, "merge", real_merge)
    prompts[3] = "Describe the pen."  # edited in place: same path, same number of rows
    write_prompts(tmp_path / "p.jsonl", prompts)
    capsys.readouterr()
    main(["--config", cfg, "--out", str(out)])
    log = capsys.readouterr().out
    assert "1 finished chunks were sampled from other prompts (edited since): sampling them again" in log
    assert "resuming, 2 of 3 chunks already done" in log
    fresh = tmp_path / "fresh.jsonl"
    main(
        [
            "--config",
            rand_config(tmp_path, prompts=write_prompts(tmp_path / "q.jsonl", prompts)),
            "--out",
            str(fresh),
        ]
    )
    assert [r["prompt"] for r in read(out)] == prompts
    assert out.read_text() == fresh.read_text()  # as an uninterrupted run on the new prompts
