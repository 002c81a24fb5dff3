"""Write `predict` generations to a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from lit_pref.atomic import atomic_write


class PredictionWriter(pl.Callback):
    """After `python -m lit_pref predict`, write one {"prompt", "response"} line per prompt (atomically).

    Args:
        path: Output .jsonl file.
    """

    def __init__(self, path: str = "predictions.jsonl"):
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.rows.extend(outputs)

    def on_predict_end(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in self.rows)

        atomic_write(self.path, write)
        print(f"lit_pref: wrote {len(self.rows)} generations to {self.path}")
