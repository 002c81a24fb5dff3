"""`python -m lit_pref crossfit`: the columns DR-CausalPO reads, written next to the data.

1. Outcome model g_hat with K-fold cross-fitting: the rows of the config's `data.train` are split into K folds;
   for each fold an OutcomeModel (the config's model, data and trainer) is fit on the other K-1 folds with
   Lightning's Trainer and predicts the held-out fold, so no row's `prediction` comes from a model trained on
   that row. Rows of `--predict` sources get the mean prediction of the K models. With `--train-on SPEC` one model
   is fit on SPEC instead (e.g. a separate observational dataset) and predicts every row.
2. With `--base MODEL`: for every row, a text X~ sampled from the base model f0 for the row's prompt (batched,
   KV-cached, seeded) as `sample`, its f0 log-prob `sample_logp` (summed over the tokens the data module will
   score: the sample is re-encoded exactly as training rows are), and `sample_prediction` = g_hat(X~) (mean of
   the models).

Each source's rows come back as `<out>/<name>.jsonl` (all input columns kept, plus `fold`, `prediction` and the
sample columns), written atomically; `<out>/fold<k>/` holds fold k's exported outcome model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from lit_pref.atomic import atomic_write, unwritable_reason
from lit_pref.errors import ConfigError

ADDED_COLUMNS = ("fold", "prediction", "sample", "sample_logp", "sample_prediction")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lit_pref crossfit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", required=True, help="outcome-model config (model: lit_pref.OutcomeModel)")
    parser.add_argument("--out", required=True, help="folder for <name>.jsonl and fold<k>/")
    parser.add_argument("--folds", type=int, default=5, help="K of K-fold cross-fitting (default 5)")
    parser.add_argument(
        "--train-on", default=None, help="fit one model on this source instead of cross-fitting"
    )
    parser.add_argument("--predict", action="append", default=[], metavar="NAME=SPEC",
                        help="another source to annotate, e.g. val=task:outcomes (repeatable)")  # fmt: skip
    parser.add_argument(
        "--base", default=None, help="base model f0 to sample X~ from (enables sample columns)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="sample length (default: the data's)"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split and of the samples")
    parser.add_argument("--set", action="append", default=[], metavar="ARG=VALUE",
                        help="extra config override for every fit, e.g. --set trainer.max_steps=100")  # fmt: skip
    ns = parser.parse_args(argv)
    if ns.folds < 2 and ns.train_on is None:
        raise ConfigError(
            f"--folds must be at least 2 for cross-fitting, got {ns.folds} (or give --train-on)"
        )
    for item in ns.predict:
        if "=" not in item:
            raise ConfigError(f"--predict takes NAME=SPEC (e.g. val=data/val.jsonl), got {item!r}")
    return ns


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def build(config: str, overrides: list[str]):
    """Instantiate (model, datamodule, trainer) from an outcome-model config, as `fit` would."""
    from lit_pref.algorithms.causal import OutcomeModel
    from lit_pref.commands.lightning import cli_instances

    model, datamodule, trainer = cli_instances(["--config", config, *overrides])
    if not isinstance(model, OutcomeModel):
        raise ConfigError(f"{config}: crossfit trains a lit_pref.OutcomeModel, got {type(model).__name__}")
    return model, datamodule, trainer


def load_rows(spec: str, datamodule, stage: str = "train") -> list[dict[str, Any]]:
    from lit_pref.data.sources import load_source

    raw = load_source(spec, datamodule.splits[stage], stage, "outcome", datamodule.task_options)
    return raw.to_list()


def examples(rows: list[dict], source: str, datamodule) -> tuple[list, list]:
    """(prompts, responses) of outcome rows, validated as the data module does (errors name row and column)."""
    from lit_pref.data.schema import check_columns, validate_row

    mapping = check_columns("outcome", datamodule.columns, set(rows[0]), source)
    validated = [validate_row(r, "outcome", mapping, source, i) for i, r in enumerate(rows)]
    return [e.prompt for e in validated], [e.response for e in validated]


def fit_fold(config: str, overrides: list[str], rows: list[dict], folder: Path, name: str):
    """Fit one outcome model on `rows` (written to folder/train.jsonl); returns the trained module."""
    from lit_pref.callbacks.export import export_module

    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", rows)
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": "runs", "name": f"crossfit/{name}"}}  # fmt: skip
    args = [f"--trainer.logger={json.dumps(logger)}", *overrides, f"--data.train={folder / 'train.jsonl'}"]
    model, datamodule, trainer = build(config, args)
    trainer.fit(model, datamodule)
    export_module(model, folder / "model")
    model.eval()
    return model


def annotate(ns: argparse.Namespace) -> dict[str, Path]:
    out = Path(ns.out)
    if reason := unwritable_reason(out):
        raise ConfigError(f"crossfit: --out {out}: {reason}. Give a writable folder (nothing was trained)")
    overrides = [f"--{item}" for item in ns.set]
    _, datamodule, _ = build(ns.config, overrides)
    train_spec = datamodule.sources["train"]
    if not isinstance(train_spec, str):
        raise ConfigError(f"{ns.config}: crossfit needs one data.train source, got {train_spec!r}")
    sources = {"train": (train_spec, "train")}
    sources.update({name: (spec, "val") for name, spec in (p.split("=", 1) for p in ns.predict)})
    rows = {name: load_rows(spec, datamodule, stage) for name, (spec, stage) in sources.items()}
    texts = {name: examples(rows[name], spec, datamodule) for name, (spec, _) in sources.items()}
    if ns.train_on:
        models = [fit_fold(ns.config, overrides, load_rows(ns.train_on, datamodule), out / "fold0", "fold0")]
        predictions = {name: models[0].predict_outcomes(*texts[name]).numpy() for name in rows}
    else:
        models, predictions = cross_fit(ns, overrides, rows, texts, out)
    for name in rows:
        for r, p in zip(rows[name], predictions[name]):
            r["prediction"] = float(p)
    if ns.base:
        add_samples(ns, rows, texts, models, datamodule)
    written = {}
    for name, rs in rows.items():
        written[name] = write_jsonl(out / f"{name}.jsonl", rs)
        added = ", ".join(c for c in ADDED_COLUMNS if c in rs[0])
        print(f"wrote {len(rs)} rows with {added} to {written[name]}")
    return written


def cross_fit(ns, overrides, rows, texts, out: Path):
    """K models, each fit without one fold: out-of-fold predictions for the train rows (their `fold` column is
    set), the mean of the K models for the other sources."""
    folds = np.random.default_rng(ns.seed).permutation(len(rows["train"])) % ns.folds
    predictions = {name: np.zeros(len(r)) for name, r in rows.items()}
    prompts, responses = texts["train"]
    models = []
    for k in range(ns.folds):
        held_out = np.flatnonzero(folds == k)
        train_rows = [r for r, f in zip(rows["train"], folds) if f != k]
        model = fit_fold(ns.config, overrides, train_rows, out / f"fold{k}", f"fold{k}")
        held_out_texts = [prompts[i] for i in held_out], [responses[i] for i in held_out]
        predictions["train"][held_out] = model.predict_outcomes(*held_out_texts).numpy()
        for name in rows:
            if name != "train":
                predictions[name] += model.predict_outcomes(*texts[name]).numpy() / ns.folds
        models.append(model)
    for r, f in zip(rows["train"], folds):
        r["fold"] = int(f)
    return models, predictions


def add_samples(ns, rows, texts, models, datamodule) -> None:
    """One f0 sample per row with its f0 log-prob and mean outcome-model prediction."""
    from lit_pref.models.batching import score_sequences
    from lit_pref.models.loading import load_causal_lm
    from lit_pref.sampling import SamplingConfig, generate

    renderer = datamodule.renderer()  # the sample is rendered and re-encoded exactly as training rows are
    tokenizer = renderer.tokenizer
    base = load_causal_lm(ns.base).eval()
    default_new = max(datamodule.max_length - datamodule.max_prompt_length, 1)
    sampling = SamplingConfig(max_new_tokens=ns.max_new_tokens or default_new, temperature=ns.temperature)
    for offset, name in enumerate(rows):
        prompts = texts[name][0]
        prompt_ids = [renderer.prompt_ids(p) for p in prompts]
        samples = generate(
            base, tokenizer, prompt_ids, sampling, batch_size=64, seed=ns.seed + 1_000_003 * offset
        ).texts
        encoded = [renderer.encode(p, s) for p, s in zip(prompts, samples)]  # re-encoded as training rows are
        logps = score_sequences(
            base, [e[0] for e in encoded], [e[1] for e in encoded], tokenizer.pad_token_id, 64
        )
        sample_pred = sum(m.predict_outcomes(prompts, samples).numpy() for m in models) / len(models)
        for r, s, lp, p in zip(rows[name], samples, logps.tolist(), sample_pred):
            r.update(sample=s, sample_logp=float(lp), sample_prediction=float(p))


def main(argv: list[str]) -> None:
    annotate(parse_args(argv))
