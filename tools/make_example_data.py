"""Write the small example data files shipped in configs/data/ (deterministic: run it again to get the same files).

    python tools/make_example_data.py

Rows are one-line product reviews: chosen responses are positive, rejected ones negative or flat, so a
trained policy's preference is easy to see. The built-in tasks (lit_pref.tasks) generate richer data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ITEMS = (
    "camera phone laptop kettle lamp chair book movie album jacket backpack bicycle blender toaster headphones "
    "speaker keyboard monitor watch umbrella tent mattress pillow mug bottle printer router tablet shoes hotel".split()
)
POSITIVE = ["great", "excellent", "wonderful", "lovely", "fantastic", "reliable", "comfortable", "beautiful"]
NEGATIVE = ["terrible", "awful", "disappointing", "flimsy", "useless", "broken", "annoying", "ugly"]
NEUTRAL = ["ordinary", "average", "plain", "standard", "normal", "typical"]
TEMPLATES = [
    "The {item} is {adj}.",
    "This {item} is really {adj}.",
    "A {adj} {item}, {adj2} too.",
    "I think the {item} is {adj}.",
]


def sentence(rng: random.Random, item: str, words: list[str]) -> str:
    return rng.choice(TEMPLATES).format(item=item, adj=rng.choice(words), adj2=rng.choice(words))


def rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        item = rng.choice(ITEMS)
        out.append(
            {
                "prompt": f"Write a one-line review of the {item}.",
                "chosen": sentence(rng, item, POSITIVE),
                "rejected": sentence(rng, item, NEGATIVE if rng.random() < 0.7 else NEUTRAL),
            }
        )
    return out


def write(path: Path, data: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))


def main() -> None:
    folder = Path(__file__).resolve().parent.parent / "configs" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    train, val = rows(0, 512), rows(1, 64)
    write(folder / "reviews_pairs_train.jsonl", train)
    write(folder / "reviews_pairs_val.jsonl", val)
    write(
        folder / "reviews_sft_train.jsonl", [{"prompt": r["prompt"], "response": r["chosen"]} for r in train]
    )
    write(folder / "reviews_sft_val.jsonl", [{"prompt": r["prompt"], "response": r["chosen"]} for r in val])
    chat = [
        {
            "prompt": [
                {"role": "system", "content": "You write short reviews."},
                {"role": "user", "content": r["prompt"]},
            ],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in val[:32]
    ]
    write(folder / "reviews_pairs_chat.jsonl", chat)


if __name__ == "__main__":
    main()
