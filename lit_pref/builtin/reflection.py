"""Training rows of `builtin:tiny-sft-constraints`: the three formats a policy needs for PRS on task:constraints.

(i) respond: x + "\\n\\n" + z -> a response meeting each constraint with probability p_satisfy (and some rows of
x alone, so Rand has something to sample); (ii) feedback: the shipped feedback template on (x + z, y, z) -> the
lines of the unmet constraints; (iii) refine: the shipped refine templates (with and without feedback) on
(x + z, y, z[, f]) -> y with each unmet constraint fixed with probability p_fix. The templates are the ones the
PRS sampler uses, so the model reads exactly the prompts it will be given.
"""

from __future__ import annotations

import random

from lit_pref.sampling.samplers import load_template, with_preference
from lit_pref.tasks.constraints import ConstraintsTask, feedback_for

#: share of each format among the rows
MIX = {"respond": 0.4, "bare": 0.1, "feedback": 0.25, "refine": 0.17, "refine_without_feedback": 0.08}


def reflection_rows(num_rows: int, seed: int = 0) -> list[dict]:
    """`num_rows` demonstration rows {prompt, response} mixing the formats in MIX (seeded)."""
    task = ConstraintsTask(seed=seed, num_rows=num_rows)
    rng = random.Random(seed)
    templates = {name: load_template(name) for name in ("feedback", "refine", "refine_without_feedback")}
    rows = []
    for x, z, cs in task.examples("train"):
        item = x.split()[-1].rstrip(".")
        question = with_preference(x, z)
        y = task.respond(rng, item, cs)
        kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        fields = {"question": question, "answer": y, "preference": z}
        if kind == "respond":
            rows.append({"prompt": question, "response": y})
        elif kind == "bare":
            rows.append({"prompt": x, "response": y})
        elif kind == "feedback":
            rows.append({"prompt": templates["feedback"].format(**fields), "response": feedback_for(cs, y)})
        elif kind == "refine":
            prompt = templates["refine"].format(**fields, feedback=feedback_for(cs, y))
            rows.append({"prompt": prompt, "response": task.refine(rng, y, cs)})
        else:
            rows.append({"prompt": templates[kind].format(**fields), "response": task.refine(rng, y, cs)})
    return rows
