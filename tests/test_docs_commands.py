"""The docs' commands: tools/docs_commands.py finds every `python -m lit_pref ...` line; the CI-sized subset runs."""

from __future__ import annotations

import pytest

from tools.docs_commands import (
    DocCommand,
    docs_commands,
    extract,
    run,
    runnable_args,
    scratch_folder,
    why_not_run,
)

MARKDOWN = """# Title

Run `python -m lit_pref fit --config configs/sft.yaml` inline, or mention `python -m lit_pref crossfit`.

    python -m lit_pref fit --config configs/dpo.yaml \\
        --trainer.max_steps 200      # a comment
    bash tools/setup.sh && .venv/bin/python -m lit_pref fit --config configs/demo.yaml

```bash
python -m lit_pref fit --config configs/<method>.yaml
python -m lit_pref fit --config configs/dpo.yaml --data.train my_pairs.jsonl
```
Prose about python -m lit_pref: not code.
"""


def test_commands_are_found_in_code_blocks_and_inline_code(tmp_path):
    path = tmp_path / "page.md"
    path.write_text(MARKDOWN)
    found = extract(path)
    assert [(c.source, c.text) for c in found] == [
        ("page.md:3", "python -m lit_pref fit --config configs/sft.yaml"),
        ("page.md:3", "python -m lit_pref crossfit"),
        ("page.md:5", "python -m lit_pref fit --config configs/dpo.yaml --trainer.max_steps 200"),
        ("page.md:7", "python -m lit_pref fit --config configs/demo.yaml"),
        ("page.md:10", "python -m lit_pref fit --config configs/<method>.yaml"),
        ("page.md:11", "python -m lit_pref fit --config configs/dpo.yaml --data.train my_pairs.jsonl"),
    ]
    assert [why_not_run(c) for c in found] == [
        "",
        "a mention in prose (no options)",
        "",
        "",
        "placeholder",
        "reads my_pairs.jsonl, a file of the reader's",
    ]
    assert runnable_args(found[2])[-6:] == ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
                                            "--trainer.num_sanity_val_steps", "0"]  # fmt: skip


def test_the_docs_show_the_quickstart_and_the_device_composition():
    commands = {c.text: c for c in docs_commands()}
    assert len(commands) >= 20
    assert commands["python -m lit_pref fit --config configs/demo.yaml"].skip == ""
    composition = "python -m lit_pref fit --config configs/dpo.yaml --config configs/strategy/fsdp2.yaml --trainer.devices 2"
    assert commands[composition].skip == ""


@pytest.mark.distributed
def test_ci_subset_runs_the_fsdp2_composition_on_two_processes(tiny_path, tmp_path):
    """The README's FSDP2 composition: 16 batches per process per epoch, val_check_interval 20 (clamped)."""
    command = DocCommand(
        "README.md",
        "python -m lit_pref fit --config configs/dpo.yaml --config configs/strategy/fsdp2.yaml --trainer.devices 2",
    )
    ok, _, output = run(command, scratch_folder(tmp_path), timeout_s=300)
    assert ok, output[-3000:]
    note = "trainer.val_check_interval (20) is more than the 16 training batches of an epoch (per process)"
    assert note in output
