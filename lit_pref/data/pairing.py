"""Pairs of responses that share a prompt, from demonstration rows (for losses that compare responses of one
prompt, such as WSPO's pairwise level, where the per-prompt normalizer log Z(x) cancels in differences)."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from lit_pref.errors import DataError


def pair_by_prompt(dataset, sources: list[tuple[str, int]], option: str = "data.pair_responses"):
    """Encoded demonstration rows (prompt_ids, response_ids, source_row) -> pairwise rows (prompt_ids, chosen_ids,
    rejected_ids, source_row): every two responses i < j of one prompt (the prompt as the model sees it, its
    token ids), in row order. `sources` lists (source spec, number of rows) in the order the rows were
    concatenated, so that an error names the file and row. A prompt with a single response is a DataError.
    """
    import datasets

    prompts, responses, rows = dataset["prompt_ids"], dataset["response_ids"], dataset["source_row"]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for position, prompt in enumerate(prompts):
        groups[tuple(prompt)].append(position)
    single = [members[0] for members in groups.values() if len(members) == 1]
    if single:
        spec, row = _locate(single[0], sources, rows)
        raise DataError(
            f"{spec}: row {row} is the only response to its prompt ({len(single)} of {len(groups)} prompts have a "
            f"single response), so it cannot be paired ({option}: responses are compared with other responses "
            "of the same prompt). Give two or more rows per prompt, drop the single ones, or use pairwise rows "
            "(prompt, chosen, rejected)"
        )
    out: dict[str, list[Any]] = {"source_row": [], "prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for members in groups.values():
        for i, j in combinations(members, 2):
            out["source_row"].append(rows[i])
            out["prompt_ids"].append(prompts[i])
            out["chosen_ids"].append(responses[i])
            out["rejected_ids"].append(responses[j])
    return datasets.Dataset.from_dict(out)


def _locate(position: int, sources: list[tuple[str, int]], rows: list[int]) -> tuple[str, int]:
    for spec, count in sources:
        if position < count:
            return spec, rows[position]
        position -= count
    return sources[-1][0], rows[-1]
