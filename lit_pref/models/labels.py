"""The label of a position that is never scored (prompt and padding): the one definition, as in HF and torch."""

IGNORE_INDEX = -100
