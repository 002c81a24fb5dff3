"""`python -m lit_pref data`: write a built-in task's rows as JSONL files."""

from __future__ import annotations


def main(argv: list[str]) -> None:
    """`python -m lit_pref data --task reviews --format pairwise --out DIR`: write a task's rows as JSONL."""
    import argparse
    import json
    from pathlib import Path

    from lit_pref.atomic import unwritable_reason
    from lit_pref.errors import ConfigError
    from lit_pref.tasks import TASKS, get_task

    parser = argparse.ArgumentParser(prog="python -m lit_pref data", description=main.__doc__)
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="built-in task")
    parser.add_argument("--format", required=True, choices=["pairwise", "demonstration", "outcome", "prompt"])
    parser.add_argument("--out", required=True, help="folder for train.jsonl, val.jsonl and test.jsonl")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, e.g. --option label_noise=0.1 (values are parsed as JSON)")  # fmt: skip
    ns = parser.parse_args(argv)
    options = {}
    for item in ns.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    out = Path(ns.out)
    if reason := unwritable_reason(out):
        raise ConfigError(f"data: --out {out}: {reason}. Give a writable folder")
    task = get_task(ns.task, options)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        rows = task.rows(ns.format, split)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} {ns.format} rows to {out / f'{split}.jsonl'}")
