"""Chat-template rendering, tokenization and truncation of prompts and completions.

Conversational rows are rendered the way the field does it: the prompt with the generation prompt appended,
then prompt + completion; the rendered prompt must be a prefix of the rendered conversation and the
completion is the rest. Both parts are tokenized without adding special tokens (the template already holds
them), so no BOS or EOS is ever doubled. Plain strings are tokenized as they are, with EOS appended to the
completion, unless `text_as_chat` wraps them as a user turn and an assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from lit_pref.data.checks import Text
from lit_pref.errors import DataError

#: file in an exported model folder holding the Renderer settings it was trained with (read by scorers)
RENDER_SETTINGS = "lit_pref_render.json"


@dataclass
class Renderer:
    """Turns (prompt, completion) texts into token ids under the length limits.

    Truncation keeps the END of the prompt (at most `max_prompt_length` tokens) and the START of the
    completion, so that prompt + completion fits in `max_length`.
    """

    tokenizer: object
    max_length: int
    max_prompt_length: int
    text_as_chat: bool = False

    def __post_init__(self):
        if not 1 <= self.max_prompt_length < self.max_length:
            raise DataError(
                f"data.max_prompt_length ({self.max_prompt_length}) must be at least 1 and smaller than "
                f"data.max_length ({self.max_length}), or no prompt or no response token would fit"
            )
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id
        # A sequence needs one token before its first scored token: use BOS (or EOS) for empty prompts.
        self.start_id = self.bos_id if self.bos_id is not None else self.eos_id

    # -- helpers -------------------------------------------------------------------------------------------
    def _ids(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def _as_messages(self, text: Text, role: str) -> list[dict[str, str]]:
        return text if isinstance(text, list) else [{"role": role, "content": text}]

    def _use_template(self, prompt: Text, completion: Text | None) -> bool:
        conversational = isinstance(prompt, list) or isinstance(completion, list)
        if (conversational or self.text_as_chat) and not getattr(self.tokenizer, "chat_template", None):
            raise DataError(
                "the rows are conversational (or data.text_as_chat is on) but the tokenizer has no chat template. "
                "Use a tokenizer with a chat_template, or give plain strings with data.text_as_chat: false"
            )
        return conversational or self.text_as_chat

    def _dedupe_bos(self, ids: list[int]) -> list[int]:
        while self.bos_id is not None and len(ids) >= 2 and ids[0] == ids[1] == self.bos_id:
            ids = ids[1:]
        return ids

    def _render_prompt(self, prompt: Text) -> str:
        return self.tokenizer.apply_chat_template(
            self._as_messages(prompt, "user"), add_generation_prompt=True, tokenize=False
        )

    # -- public API -----------------------------------------------------------------------------------------
    def full_prompt_ids(self, prompt: Text, completion_hint: Text | None = None) -> list[int]:
        """Token ids of the prompt alone (what generation starts from), not truncated."""
        if self._use_template(prompt, completion_hint):
            ids = self._ids(self._render_prompt(prompt))
        elif prompt:
            ids = self._ids(prompt, add_special_tokens=True)
        else:
            ids = []
        return self._dedupe_bos(ids) or ([self.start_id] if self.start_id is not None else [])

    def prompt_ids(self, prompt: Text, completion_hint: Text | None = None) -> list[int]:
        """Token ids of the prompt alone, truncated from the left to `max_prompt_length`."""
        return self.full_prompt_ids(prompt, completion_hint)[-self.max_prompt_length :]

    def completion_ids(self, prompt: Text, completion: Text) -> list[int]:
        """Token ids of the completion that follows the rendered prompt (not truncated)."""
        if self._use_template(prompt, completion):
            messages = self._as_messages(prompt, "user")
            rendered_prompt = self._render_prompt(prompt)
            full = self.tokenizer.apply_chat_template(
                messages + self._as_messages(completion, "assistant"), tokenize=False
            )
            if not full.startswith(rendered_prompt):
                raise DataError(
                    "the chat template does not render the prompt (with the generation prompt) as a prefix of "
                    f"the whole conversation: prompt renders as {rendered_prompt[-80:]!r}, conversation as "
                    f"{full[: len(rendered_prompt) + 20][-100:]!r}. Use a template whose assistant turn starts "
                    "with the generation prompt"
                )
            ids = self._ids(full[len(rendered_prompt) :])
        else:
            ids = self._ids(completion)
            if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids = ids + [self.eos_id]
        while self.eos_id is not None and len(ids) >= 2 and ids[-1] == ids[-2] == self.eos_id:
            ids = ids[:-1]
        return ids

    def truncate_completion(self, prompt_ids: list[int], completion_ids: list[int]) -> list[int]:
        return completion_ids[: max(self.max_length - len(prompt_ids), 0)]

    def fit_completion(self, prompt_ids: list[int], prompt: Text, completion: Text) -> tuple[list[int], bool]:
        """A completion's ids cut to fit after `prompt_ids`, and whether the cut removed tokens."""
        full = self.completion_ids(prompt, completion)
        ids = self.truncate_completion(prompt_ids, full)
        return ids, len(ids) < len(full)

    def encode(self, prompt: Text, completion: Text) -> tuple[list[int], list[int]]:
        """(prompt_ids, completion_ids) after truncation; completion_ids may come back empty."""
        prompt_ids = self.prompt_ids(prompt, completion)
        return prompt_ids, self.truncate_completion(prompt_ids, self.completion_ids(prompt, completion))
