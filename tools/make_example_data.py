"""Write the small example data files shipped in configs/data/ (deterministic: run it again to get the same files).

    python tools/make_example_data.py

Rows are one-line product reviews: chosen responses are positive, rejected ones negative or flat, so a
trained policy's preference is easy to see. The built-in tasks (lit_pref.tasks) generate richer data.
"""

from __future__ import annotations

import hashlib
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


HUB_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs-*
  - split: test_prefs
    path: data/test_prefs-*
---
# reviews_ultrafeedback

Review pairs in the layout and columns of HuggingFaceH4/ultrafeedback_binarized (a local copy of a hub dataset:
parquet shards under data/, this card naming the splits): `prompt` (text), `prompt_id`, `chosen` and `rejected`
(whole conversations: the user turn, then the assistant reply), `score_chosen`, `score_rejected`.
Made by tools/make_example_data.py.
"""


def ultrafeedback_style(data: list[dict]) -> list[dict]:
    """Rows as UltraFeedback-binarized writes them: the prompt again as the first message of each conversation."""
    return [
        {
            "prompt": r["prompt"],
            "prompt_id": hashlib.sha256(r["prompt"].encode()).hexdigest(),
            "chosen": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["chosen"]},
            ],
            "rejected": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["rejected"]},
            ],
            "score_chosen": 8.0,
            "score_rejected": 3.0,
        }
        for r in data
    ]


def write_hub_layout(folder: Path, splits: dict[str, list[list[dict]]]) -> None:
    """A dataset folder as the hub stores one: data/<split>-0000k-of-0000n.parquet shards and a README.md card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(HUB_CARD)
    for split, shards in splits.items():
        for k, shard in enumerate(shards):
            path = folder / "data" / f"{split}-{k:05d}-of-{len(shards):05d}.parquet"
            pq.write_table(pa.Table.from_pylist(shard), path)


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
    write_hub_layout(
        folder / "reviews_ultrafeedback",
        {
            "train_prefs": [ultrafeedback_style(train[:48]), ultrafeedback_style(train[48:96])],
            "test_prefs": [ultrafeedback_style(val[:16])],
        },
    )


if __name__ == "__main__":
    main()
