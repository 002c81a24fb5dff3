"""Run every `python -m lit_pref ...` command the docs show, for a step or two, and count how many pass.

    python tools/docs_commands.py                  # README.md and docs/*.md; prints found / run / passing
    python tools/docs_commands.py --list           # only list the commands and why any is not run
    python tools/docs_commands.py --match fsdp2    # only the commands containing this text
    python tools/docs_commands.py --real           # also the real-model (SmolLM2) commands

Commands are taken from code blocks and inline code. Training commands get `--trainer.max_steps 2` and one
validation batch appended (later flags win), `crossfit` gets two folds of two steps. They run in the order the
docs give them (a command may read what an earlier one wrote) from one scratch folder whose configs/, tools/ and
docs/ link to the repository, so relative paths resolve and logs, checkpoints and exports land there, not in the
repository. A command is not run when it holds a placeholder (`<method>`,
`...`) or reads a file the repository does not have (`/models/my-sft-model`, `my_pairs.jsonl`): the docs show it
for the reader's own files. Exit status 1 when a run command fails.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"python -m lit_pref\s")
LIGHTNING = ("fit", "validate", "test", "predict")
# Options whose value is a file or folder the command reads (outputs such as --out are created by the command).
INPUTS = ("--config", "--ckpt_path", "--data.train", "--data.val", "--data.test", "--data.predict",
          "--data.tokenizer", "--model.init_args.policy", "--base", "--train-on")  # fmt: skip
TRAIN_OVERRIDES = [
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
]
CROSSFIT_OVERRIDES = ["--folds", "2", "--set", "trainer.max_steps=2", "--set", "trainer.limit_val_batches=1"]


@dataclass
class DocCommand:
    source: str  # file:line
    text: str  # the command as the docs show it (continuations joined, comment dropped)
    skip: str = ""  # why it is not run ("" when it is)

    @property
    def real_model(self) -> bool:
        return "configs/real/" in self.text or "smollm2" in self.text


def _code_lines(markdown: str):
    """(line number, text) of every line inside a fenced or indented code block, and of every inline code span."""
    fenced = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def _clean(command: str) -> str:
    """From `python -m lit_pref` to the end of the command: no shell chaining, no trailing comment."""
    command = command[COMMAND.search(command).start() :]
    command = re.split(r"\s(?:&&|;|\|)\s", command)[0]
    return re.sub(r"\s+#.*$", "", command).strip()


def extract(path: Path) -> list[DocCommand]:
    """The lit_pref commands of one Markdown file, with backslash continuations joined."""
    found, pending, start = [], "", 0
    for number, line in _code_lines(path.read_text()):
        if pending:
            pending += " " + line.strip()
        elif COMMAND.search(line):
            pending, start = line.strip(), number
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        name = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
        found.append(DocCommand(f"{name}:{start}", _clean(pending)))
        pending = ""
    return found


def why_not_run(command: DocCommand) -> str:
    """Why a docs command cannot run as shown (a placeholder, or a file the reader brings), else ""."""
    if re.search(r"<[^>]+>|\.\.\.|\bPATH\b", command.text):
        return "placeholder"
    args = shlex.split(command.text)
    if len(args) < 5:
        return "a mention in prose (no options)"
    for option, value in zip(args, args[1:]):
        if option in INPUTS and ":" not in value.split("/")[0] and not (REPO / value).exists():
            return f"reads {value}, a file of the reader's"
    return ""


def runnable_args(command: DocCommand) -> list[str]:
    """The command's arguments (after `python -m lit_pref`) with the short-run overrides appended."""
    args = shlex.split(command.text)[3:]
    if "--help" in args or any(a.endswith(".help") or a == "--print_config" for a in args):
        return args
    if args[0] in LIGHTNING:
        return args + TRAIN_OVERRIDES
    if args[0] == "crossfit":
        return args + CROSSFIT_OVERRIDES
    return args


def scratch_folder(parent: Path | None = None) -> Path:
    """A new folder (under `parent`, default the temp folder) whose configs/, tools/, docs/ link to the repo."""
    folder = Path(tempfile.mkdtemp(prefix="lit_pref_docs_", dir=parent))
    for name in ("configs", "tools", "docs"):
        (folder / name).symlink_to(REPO / name)
    return folder


def run(command: DocCommand, folder: Path | None = None, timeout_s: float = 600.0) -> tuple[bool, float, str]:
    """Run one command in `folder` (default: a new scratch folder): (passed, wall seconds, its output)."""
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lit_pref", *runnable_args(command)],
            cwd=folder or scratch_folder(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        ok, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        ok, output = False, f"timed out after {timeout_s:.0f} s"
    return ok, time.monotonic() - start, output


def docs_commands(include_real: bool = False, match: str | None = None) -> list[DocCommand]:
    """Every lit_pref command of README.md and docs/*.md, each with why it is not run ("" when it is)."""
    commands = [
        c for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))] for c in extract(path)
    ]
    for command in commands:
        command.skip = why_not_run(command)
        if not command.skip and command.real_model and not include_real:
            command.skip = "real model (run with --real)"
        if not command.skip and match is not None and match not in command.text:
            command.skip = f"does not contain {match!r}"
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="list the commands without running them")
    parser.add_argument("--real", action="store_true", help="also run the real-model (SmolLM2) commands")
    parser.add_argument("--match", help="run only the commands containing this text")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per command (default 600)")
    args = parser.parse_args(argv)
    commands = docs_commands(args.real, args.match)
    folder = (
        scratch_folder()
    )  # one for the whole run: a command may read what an earlier one wrote (crossfit)
    passed = ran = 0
    for command in commands:
        if command.skip or args.list:
            print(f"{'list' if not command.skip else 'skip'}  {command.source}  {command.text}"
                  + (f"  ({command.skip})" if command.skip else ""), flush=True)  # fmt: skip
            continue
        ok, wall, output = run(command, folder, args.timeout)
        ran, passed = ran + 1, passed + ok
        print(f"{'pass' if ok else 'FAIL'}  {command.source}  {command.text}  ({wall:.0f} s)", flush=True)
        if not ok:
            print("      " + "\n      ".join(output.strip().splitlines()[-6:]), flush=True)
    if folder is not None:
        print(f"logs, checkpoints and exports of the runs: {folder}")
    print(f"docs commands: found {len(commands)}, run {ran}, passing {passed}")
    return 0 if passed == ran else 1


if __name__ == "__main__":
    sys.exit(main())
