"""CausalPO / DR-CausalPO: estimators by hand and by simulation, the synthetic task, the outcome model with
cross-fitting and base-model samples, errors that name the row, and short runs that lower the exact regret."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import lit_pref
from lit_pref.errors import ConfigError, DataError
from lit_pref.tasks.outcomes import OutcomesTask
from tests.conftest import REPO, write_jsonl
from tests.helpers import trainer

CAUSAL = REPO / "configs" / "causal"


# -- estimators ---------------------------------------------------------------------------------------------


def _dr_estimates(pi, p_assumed, g_hat, task, n=400, reps=3000, seed=0):
    """Raw-ratio DR (and OO) estimates of V(pi) over `reps` simulated randomized datasets (numpy, vectorized)."""
    rng = np.random.default_rng(seed)
    p_true, g = task.propensities, task.effects
    x = rng.choice(len(g), size=(reps, n), p=p_true)
    y = g[x] + rng.normal(0, 1, (reps, n))
    xs = rng.choice(len(g), size=(reps, n), p=p_true)  # base-model samples; f0 = P^R here
    residual = (pi[x] / p_assumed[x] * (y - g_hat[x])).mean(1)
    model_term = (pi[xs] / p_true[xs] * g_hat[xs]).mean(1)
    return residual + model_term, model_term


def test_dr_estimate_is_unbiased_when_either_propensity_or_outcome_model_is_right():
    task = OutcomesTask()
    g, p = task.effects, task.propensities
    biased_g = g + 0.5 * task.feature  # the confounded outcome model
    pi = np.exp(3 * biased_g) / np.exp(3 * biased_g).sum()  # a fixed policy that trusted it
    truth = task.value(pi)
    wrong_p = np.full(len(g), 1 / len(g))  # misspecified assignment probabilities
    dr_right_p, oo_biased = _dr_estimates(pi, p, biased_g, task)
    dr_right_g, _ = _dr_estimates(pi, wrong_p, g, task, seed=1)
    for estimates in (dr_right_p, dr_right_g):
        stderr = estimates.std() / math.sqrt(len(estimates))
        assert abs(estimates.mean() - truth) < 4 * stderr
    # the outcome-only estimate with the confounded model is biased by sum_x pi(x) 0.5 c(x)
    assert oo_biased.mean() - truth == pytest.approx(0.5 * pi @ task.feature, abs=0.01)
    assert 0.5 * pi @ task.feature > 0.2


# -- the synthetic task --------------------------------------------------------------------------------------


def test_outcomes_task_world_and_rows():
    task = OutcomesTask(seed=3, num_rows=4000)
    assert task.propensities.sum() == pytest.approx(1.0) and len(task.texts) == 30
    assert task.regret(task.propensities) == pytest.approx(1.226, abs=1e-3)
    best = int(np.argmax(task.effects))
    assert task.regret(np.eye(30)[best]) == 0.0
    assert task.value(np.zeros(30)) == task.effects.min()  # missing mass = the worst text
    rows = task.rows("outcome", "train")
    counts = np.bincount([task.texts.index(r["text"]) for r in rows], minlength=30) / len(rows)
    assert np.abs(counts - task.propensities).max() < 0.02
    assert rows[0]["propensity"] == pytest.approx(task.propensities[task.texts.index(rows[0]["text"])])
    observational = OutcomesTask(assignment="observational", confounding=0.5, num_rows=20000).rows(
        "outcome", "train"
    )
    assert "propensity" not in observational[0]
    by_text = {}
    for r in observational:
        by_text.setdefault(r["text"], []).append(r["outcome"])
    bias = np.array([np.mean(by_text[t]) - task.effects[i] for i, t in enumerate(task.texts)])
    assert np.abs(bias - 0.5 * task.feature).max() < 0.2  # E[Y|X] = g + 0.5 c
    top = OutcomesTask(top_fraction=0.25).rows("outcome", "train")
    assert len(top) == 500 and min(r["outcome"] for r in top) > np.quantile([r["outcome"] for r in rows], 0.5)
    assert task.reward([""], [task.texts[best]]) == [task.effects[best]]


def test_base_model_is_the_randomization_distribution():
    from lit_pref.callbacks.game import policy_distribution

    task = OutcomesTask()
    module = lit_pref.SFT(tokenizer="builtin:outcomes-base", max_length=2, max_prompt_length=1)
    module.configure_model()
    pi = policy_distribution(module, "<s>", task.texts)
    assert np.abs(pi - task.propensities).max() < 1e-4


# -- data columns, errors ------------------------------------------------------------------------------------


def _outcome_rows(n=8):
    task = OutcomesTask(num_rows=64)
    rows = task.rows("outcome", "train")[:n]
    for i, r in enumerate(rows):
        r.update(prediction=0.1 * i, sample=task.texts[i], sample_logp=-1.0 - i, sample_prediction=-0.1 * i)
    return rows


def _module(**kwargs):
    kwargs.setdefault("policy", "builtin:outcomes-base")
    return lit_pref.CausalPO(tokenizer="builtin:outcomes-base", max_length=2, max_prompt_length=1, **kwargs)


def _data(train, **kwargs):
    return lit_pref.PreferenceDataModule(
        tokenizer="builtin:outcomes-base", train=train, format="outcome", max_length=2, max_prompt_length=1,
        batch_size=kwargs.pop("batch_size", 8), **kwargs,
    )  # fmt: skip


def test_collator_concatenates_texts_and_base_samples(tmp_path):
    rows = _outcome_rows()
    dm = _data(write_jsonl(tmp_path / "t.jsonl", rows), shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_rows"] == 8 and batch["input_ids"].shape == (16, 2)
    tok = dm.tokenizer
    assert (
        tok.decode(batch["input_ids"][0, 1]) == rows[0]["text"]
        and tok.decode(batch["input_ids"][8, 1]) == "text00"
    )
    assert torch.equal(batch["sample_logp"], torch.tensor([-1.0 - i for i in range(8)]))
    assert batch["prediction"][3].item() == pytest.approx(0.3)
    assert (batch["labels"][:, 0] == -100).all()  # the start token is never scored


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [("outcome", float("nan"), "the number is nan"), ("propensity", None, "missing"),
     ("propensity", 0.0, r"outside \(0, 1\]"), ("sample_logp", 0.5, "is positive")],
)  # fmt: skip
def test_bad_outcome_rows_name_the_row_and_column(tmp_path, column, value, problem):
    rows = _outcome_rows()
    rows[5][column] = value
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r).replace("NaN", "NaN") + "\n" for r in rows))
    dm = _data(str(path))
    with pytest.raises(DataError, match=rf"bad.jsonl, row 5, column '{column}': .*{problem}"):
        dm.setup("fit")


def test_missing_columns_and_companions_are_config_errors(tmp_path):
    rows = [{"text": r["text"], "outcome": r["outcome"]} for r in _outcome_rows()]
    dm = _data(write_jsonl(tmp_path / "plain.jsonl", rows))
    with pytest.raises(ConfigError, match="set model.init_args.base"):
        trainer(1).fit(_module(), dm)
    with pytest.raises(
        ConfigError, match=r"needs the data column\(s\) \['sample', 'sample_prediction', 'prediction'\]"
    ):
        trainer(1).fit(_module(estimator="dr", base=lit_pref.FrozenCopy()), dm)
    with pytest.raises(ConfigError, match="estimator must be"):
        _module(estimator="snips")


def test_base_model_path_equals_propensity_path(tmp_path):
    """f0 = P^R for the built-in task, so l_R from the base model matches log(propensity) and the losses agree."""
    rows = _outcome_rows()
    dm = _data(write_jsonl(tmp_path / "t.jsonl", rows), shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with_column, with_base = _module(estimator="dr"), _module(estimator="dr", use_propensity=False,
                                                              base=lit_pref.FrozenCopy())  # fmt: skip
    for module in (with_column, with_base):
        module.configure_model()
        module._prepare_companions()
    from_column = with_column.behavior_logps(batch, 8)
    from_base = with_base.behavior_logps(batch, 8)
    assert torch.allclose(from_column[:8], from_base[:8], atol=1e-4)
    assert torch.equal(from_column[8:], batch["sample_logp"])  # the stored column wins over the base model
    loss_column, _ = with_column.compute_loss(batch)
    loss_base, metrics = with_base.compute_loss(batch)
    assert loss_column.item() == pytest.approx(loss_base.item(), abs=1e-4)
    assert metrics["causal/ess"].item() == pytest.approx(1.0, abs=1e-4)  # policy = f0: all ratios 1


def test_outcome_model_binary_outcomes_must_be_0_or_1(tmp_path):
    rows = [{"text": r["text"], "outcome": float(i % 2)} for i, r in enumerate(_outcome_rows())]
    rows[6]["outcome"] = 0.5
    dm = _data(write_jsonl(tmp_path / "b.jsonl", rows), shuffle=False)
    model = lit_pref.OutcomeModel(outcome_type="binary", tokenizer="builtin:outcomes-base", max_length=2,
                                  max_prompt_length=1)  # fmt: skip
    with pytest.raises(DataError, match="row 6: outcome 0.5 is not 0 or 1"):
        trainer(1).fit(model, dm)


# -- cross-fitting and base samples --------------------------------------------------------------------------


def test_crossfit_predictions_are_out_of_fold_and_samples_carry_base_logps(tmp_path):
    from lit_pref.commands.crossfit import annotate, parse_args

    out = tmp_path / "cf"
    ns = parse_args([
        "--config", str(CAUSAL / "outcome_model.yaml"), "--out", str(out), "--folds", "3",
        "--base", "builtin:outcomes-base", "--predict", "val=task:outcomes", "--seed", "1",
        "--set", 'data.task_options={"seed": 4, "num_rows": 120}', "--set", "trainer.max_epochs=2",
        "--set", "trainer.logger=false",
    ])  # fmt: skip
    annotate(ns)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 120 and sorted({r["fold"] for r in rows}) == [0, 1, 2]
    key = lambda r: (r["text"], r["outcome"])  # noqa: E731  (outcomes are continuous: unique per row)
    for k in range(3):
        fold_train = {
            key(json.loads(line)) for line in (out / f"fold{k}" / "train.jsonl").read_text().splitlines()
        }
        held_out = {key(r) for r in rows if r["fold"] == k}
        assert held_out and not held_out & fold_train  # no row is predicted by a model that saw it
        assert fold_train | held_out == {key(r) for r in rows}
        assert (out / f"fold{k}" / "model" / "config.json").exists()
    # the same text gets different predictions from different fold models
    by_text = {}
    for r in rows:
        by_text.setdefault(r["text"], set()).add(round(r["prediction"], 6))
    assert any(len(v) > 1 for v in by_text.values())
    task = OutcomesTask()
    for r in rows:  # f0 = P^R, so a sample's f0 log-prob is log P^R(sample)
        assert r["sample_logp"] == pytest.approx(
            math.log(task.propensities[task.texts.index(r["sample"])]), abs=1e-3
        )
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert len(val) == 32 and {"prediction", "sample", "sample_logp", "sample_prediction"} <= set(val[0])


# -- short runs lower the exact regret -----------------------------------------------------------------------


def _run(module, dm, steps):
    tracker = lit_pref.OutcomeRegret(every_n_steps=steps)
    trainer(steps, callbacks=[tracker]).fit(module, dm)
    return tracker.history[0][1], tracker.history[-1][1]


def test_ipw_run_lowers_regret():
    torch.manual_seed(0)
    dm = _data("task:outcomes", task_options={"seed": 0, "num_rows": 2000}, batch_size=64)
    start, end = _run(_module(lr=1e-2), dm, 40)
    assert start == pytest.approx(1.226, abs=1e-3)
    assert end < 0.3 * start


def test_dr_and_filtered_sft_runs_on_crossfit_style_columns(tmp_path):
    """DR with the true effects as g_hat and exact-f0 samples; filtered SFT moves only a little."""
    task = OutcomesTask(num_rows=1000)
    rng = np.random.default_rng(0)
    rows = task.rows("outcome", "train")
    for r in rows:
        k = rng.choice(30, p=task.propensities)
        r.update(prediction=float(task.effects[task.texts.index(r["text"])]), sample=task.texts[k],
                 sample_logp=float(np.log(task.propensities[k])), sample_prediction=float(task.effects[k]))  # fmt: skip
    dm = _data(write_jsonl(tmp_path / "dr.jsonl", rows), batch_size=64)
    torch.manual_seed(0)
    start, end = _run(_module(estimator="dr", lr=1e-2), dm, 40)
    assert end < 0.2 * start
    sft = lit_pref.SFT(tokenizer="builtin:outcomes-base", max_length=2, max_prompt_length=1, lr=1e-2)
    top = _data("task:outcomes", task_options={"seed": 0, "top_fraction": 0.25}, batch_size=64)
    sft_start, sft_end = _run(sft, top, 40)
    assert end < sft_end < sft_start  # filtered SFT improves on f0 but lags far behind


def test_prompt_and_response_rows_score_only_the_response(tmp_path, tiny_path):
    rows = [
        {"prompt": "Review the lamp.", "response": "The lamp is great.", "outcome": 1.0, "propensity": 0.5},
        {"prompt": "Review the mug.", "response": "The mug is awful.", "outcome": -1.0, "propensity": 0.5},
    ]
    dm = lit_pref.PreferenceDataModule(train=write_jsonl(tmp_path / "p.jsonl", rows), format="outcome",
                                       max_length=32, max_prompt_length=16, batch_size=2, shuffle=False)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    module = lit_pref.CausalPO(max_length=32, max_prompt_length=16)
    module.configure_model()
    logps = module.policy_logps(batch)
    response_tokens = [
        len(dm.tokenizer(r["response"], add_special_tokens=False)["input_ids"]) + 1 for r in rows
    ]
    assert logps.count.tolist() == response_tokens  # response + EOS, never the prompt
    loss, metrics = module.compute_loss(batch)
    weights = torch.softmax(logps.sum - math.log(0.5), 0)
    assert loss.item() == pytest.approx(-(weights * torch.tensor([1.0, -1.0])).sum().item(), abs=1e-6)
