"""Registry of built-in tasks: `task:<name>` as a data source, `lit_pref.TaskReward` as a reward."""

from __future__ import annotations

from typing import Any

from lit_pref.errors import DataError
from lit_pref.tasks.base import Task
from lit_pref.tasks.constraints import ConstraintsTask
from lit_pref.tasks.listops import ListOpsTask
from lit_pref.tasks.outcomes import OutcomesTask
from lit_pref.tasks.reviews import ReviewsTask

TASKS: dict[str, type[Task]] = {
    "reviews": ReviewsTask,
    "outcomes": OutcomesTask,
    "constraints": ConstraintsTask,
    "listops": ListOpsTask,
}


def get_task(name: str, options: dict[str, Any] | None = None) -> Task:
    if name.startswith("game-"):
        from lit_pref.tasks.games import get_game

        return get_game(name[5:], **(options or {}))
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}: the built-in tasks are {sorted(TASKS)} and game-<name>")
    try:
        return TASKS[name](**(options or {}))
    except TypeError as exc:
        raise DataError(
            f"task:{name}: bad task option ({exc}); see the task's docstring for its options"
        ) from exc


__all__ = ["TASKS", "ConstraintsTask", "ListOpsTask", "OutcomesTask", "ReviewsTask", "Task", "get_task"]
