"""Rows, rendered text and a data module builder shared by the data tests."""

import json

from lit_pref.data import PreferenceDataModule

SYSTEM = {"role": "system", "content": "Be short."}
USER = {"role": "user", "content": "Review the lamp."}
ANSWER = {"role": "assistant", "content": "The lamp is great."}
RENDERED_PROMPT = "<|bos|><|system|>Be short.<|end|><|user|>Review the lamp.<|end|><|assistant|>"


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_dm(tokenizer, train, **kwargs) -> PreferenceDataModule:
    """A data module that reuses the session tokenizer (setup would load the same one)."""
    kwargs = {"batch_size": 2, "max_length": 64, "max_prompt_length": 32, "shuffle": False, **kwargs}
    dm = PreferenceDataModule(train=train, **kwargs)
    dm.tokenizer = tokenizer
    return dm


def read_jsonl(path, n):
    with open(path) as f:
        return [json.loads(line) for line, _ in zip(f, range(n))]


PAIR = {"prompt": "Review the lamp.", "chosen": "Good lamp.", "rejected": "Bad lamp."}
