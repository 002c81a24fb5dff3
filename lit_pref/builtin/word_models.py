"""Word-level built-in models: a tokenizer whose vocabulary is exactly a task's responses and a 1-layer Llama
over it, so a policy's whole distribution can be enumerated (games, the direct-outcome task)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np


def build_word_level_model(
    folder: Path,
    tokens: list[str],
    max_positions: int,
    start_token: bool = False,
    fit: Callable[[object], None] | None = None,
) -> None:
    """Write a word-level tokenizer over `tokens` and a seeded 1-layer Llama into `folder`.

    tokens[0] doubles as padding and unknown token (always under attention_mask 0; the model has no padding_idx,
    so it keeps a trainable embedding), and with `start_token` also as BOS. There is no EOS: responses have a
    fixed length. `fit(model)` may train the model before it is saved (inside the same seeded random stream)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=tokens[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {
        "pad_token": tokens[0],
        "unk_token": tokens[0],
        **({"bos_token": tokens[0]} if start_token else {}),
    }
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
    bos = 0 if start_token else None
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=max_positions, bos_token_id=bos, eos_token_id=None,
        pad_token_id=None, tie_word_embeddings=False,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if fit is not None:
            fit(model)
    model.generation_config = GenerationConfig(pad_token_id=0, bos_token_id=bos, eos_token_id=None)
    model.save_pretrained(folder)


def game_cache_name(name: str) -> str:
    """A built-in game's cache folder is its name; a YAML-defined game's also holds a key of its definition, so an
    edited file builds a new model."""
    from lit_pref.tasks.games import GAMES, get_game

    game_spec = name[len("game-") :]
    if game_spec in GAMES:
        return name
    game = get_game(game_spec)
    return f"game-{re.sub(r'[^A-Za-z0-9_.-]', '_', game.name)}-{game.model_key()}"


def build_game_model(folder: Path, name: str) -> None:
    """`builtin:game-<game>`: the game's response tokens (the prompt token first); with the game's `start`
    distribution set (one-word games), the model's distribution over the responses is exactly `start`."""
    from lit_pref.tasks.games import get_game

    game = get_game(name[len("game-") :])
    fit = (lambda model: set_start_distribution(model, game)) if game.start is not None else None
    build_word_level_model(folder, list(game.tokens), max_positions=16, fit=fit)


def set_start_distribution(model, game) -> None:
    """Give the output layer W the rank-one correction that maps the prompt's final hidden state h to the logits
    log start (W h = log start exactly; a game scores no other input)."""
    import torch

    vocab = {t: i for i, t in enumerate(game.tokens)}
    captured = []
    hook = model.lm_head.register_forward_hook(
        lambda mod, args, out: captured.append(args[0][0, -1].detach())
    )
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[vocab[game.prompt]]]))
    finally:
        hook.remove()
    h = captured[0].double()
    target = torch.tensor(np.log([game.start[game.responses().index(t)] for t in game.tokens]))
    weight = model.lm_head.weight.detach().double()
    weight = weight + torch.outer(target - weight @ h, h) / (h @ h)
    with torch.no_grad():
        model.lm_head.weight.copy_(weight.to(model.lm_head.weight.dtype))


def fit_to_distribution(target: np.ndarray, steps: int = 400) -> Callable[[object], None]:
    """A `fit` that trains the model's next-token distribution after token 0 to `target` (cross-entropy)."""

    def fit(model) -> None:
        import torch

        goal = torch.tensor(target, dtype=torch.float32)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        start = torch.zeros(1, 1, dtype=torch.long)
        for _ in range(steps):  # cross-entropy against the target = KL(target || pi) + const
            logps = torch.log_softmax(model(input_ids=start).logits[0, -1], -1)
            loss = -(goal * logps).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return fit


def build_outcomes_base(folder: Path, name: str = "outcomes-base") -> None:
    """`builtin:outcomes-base`: a model over the start token and the texts of `task:outcomes`, fit so that its
    distribution after the start token is P^R (the base model f0 of the experiment)."""
    from lit_pref.tasks.outcomes import START_TOKEN, OutcomesTask

    task = OutcomesTask()
    target = np.concatenate([[0.0], task.propensities])
    build_word_level_model(folder, [START_TOKEN, *task.texts], max_positions=8, start_token=True,
                           fit=fit_to_distribution(target))  # fmt: skip
