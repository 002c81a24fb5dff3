"""What an online method's rollout holds: typed, movable between devices, and saved in checkpoints.

Shapes use n = prompts in the rollout and K = responses per prompt; rows of a group are prompt-major (row
i * K + j is response j of prompt i). A method's rollout is a subclass of `Rollout` with its own fields; the loop
(online.py) reads only the common ones (`num_prompts`, `tokens`, `update_tokens`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from lit_pref.models.batching import sequences_batch
from lit_pref.sampling import Generation


@dataclass
class TokenCount:
    """Tokens one piece of work processed: prompt tokens fed to generation, tokens generated, and tokens run
    through forward passes (scoring and updates)."""

    prompt: float = 0.0
    generated: float = 0.0
    forward: float = 0.0

    @classmethod
    def of(cls, generation: Generation) -> TokenCount:
        """The generation cost of `generation`."""
        return cls(prompt=float(generation.prompt_tokens), generated=float(generation.generated_tokens))

    def __add__(self, other: TokenCount) -> TokenCount:
        return TokenCount(
            self.prompt + other.prompt, self.generated + other.generated, self.forward + other.forward
        )

    @property
    def total(self) -> float:
        return self.prompt + self.generated + self.forward


def _move(value: Any, device: torch.device | str | None) -> Any:
    """`value` with every tensor moved to `device` (None: detached on the CPU, for checkpoints)."""
    if torch.is_tensor(value):
        return value.detach().cpu() if device is None else value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class Rollout:
    """The common part of every rollout.

    num_prompts: n, the prompts of the batch the rollout answers (the batch size of its logged metrics).
    tokens: the generation and scoring work of building it (logged under perf/).
    update_tokens: tokens of one update's forward pass over it.
    """

    #: subclasses by name, to rebuild a saved rollout
    kinds: ClassVar[dict[str, type[Rollout]]] = {}
    #: fields of plain nested rows (lists of dicts, tuples) saved as JSON: checkpoints load with weights_only
    json_fields: ClassVar[tuple[str, ...]] = ()

    num_prompts: int
    tokens: TokenCount = field(default_factory=TokenCount)
    update_tokens: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Rollout.kinds[cls.__name__] = cls

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor field on `device`."""
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def state(self) -> dict[str, Any]:
        """Plain values (tensors on the CPU, numbers, strings, lists, dicts) for a checkpoint."""
        out: dict[str, Any] = {"kind": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tokens":
                value = vars(value).copy()
            elif f.name in self.json_fields:
                value = json.dumps(value)
            out[f.name] = _move(value, None)
        return out

    @staticmethod
    def from_state(state: dict[str, Any]) -> Rollout:
        """The rollout `state()` saved."""
        cls = Rollout.kinds[state["kind"]]
        values = {k: v for k, v in state.items() if k != "kind"}
        values["tokens"] = TokenCount(**values["tokens"])
        for name in cls.json_fields:
            values[name] = cls.decode_json(name, json.loads(values[name]))
        return cls(**values)

    @classmethod
    def decode_json(cls, name: str, value: Any) -> Any:
        """A JSON field as the rollout holds it (JSON has lists where the rollout may hold tuples)."""
        return value


@dataclass
class Group:
    """K responses to each of n prompts (prompt-major), and what generating them cost.

    prompts: n prompt token-id lists; responses: n * K response token-id lists (EOS included when sampled).
    """

    prompts: list[list[int]]
    responses: list[list[int]]
    k: int
    tokens: TokenCount = field(default_factory=TokenCount)

    @property
    def rows(self) -> list[list[int]]:
        """The prompt of each response (each prompt K times)."""
        return [p for p in self.prompts for _ in range(self.k)]

    def sequences(self, pad_id: int, device: torch.device | str) -> dict[str, Tensor]:
        """The (n * K, T) prompt + response batch (input_ids, attention_mask, labels) on `device`."""
        return {k: v.to(device) for k, v in sequences_batch(self.rows, self.responses, pad_id).items()}

    def mean_length(self) -> Tensor:
        """Mean response length in tokens."""
        return torch.tensor([len(r) for r in self.responses], dtype=torch.float32).mean()
