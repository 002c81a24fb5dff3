"""Prefix-shared and packed layouts: the same log-probs, gradients and scores as the plain padded batch."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

import lit_pref
from lit_pref.models.batching import sequences_batch
from lit_pref.models.loading import load_causal_lm
from lit_pref.models.logprobs import sequence_logps
from lit_pref.models.packing import SequenceLayout, batch_plan, block_mask, plan_layout, supports_layout
from tests.helpers import Recorder, data_module, fit_dpo_config_with, trainer

LAYOUTS = [SequenceLayout(True), SequenceLayout(True, 48), SequenceLayout(False, 40), SequenceLayout(True, 1)]


def ids(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(16, 1000, (n,), generator=g).tolist()


def pair_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """3 pairs: responses of very different lengths, one truncated to nothing, one prompt filling the row."""
    g = torch.Generator().manual_seed(seed)
    prompts = [ids(g, 5), ids(g, 9), ids(g, 30)]
    chosen = [ids(g, 2), ids(g, 1), ids(g, 0)]
    rejected = [ids(g, 17), ids(g, 0), ids(g, 1)]
    return sequences_batch(prompts + prompts, chosen + rejected, pad_id=0)


def group_batch(k: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    """2 prompts x K samples, prompt-major (MPO's rollout rows)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [ids(g, 12), ids(g, 4)]
    rows = [p for p in prompts for _ in range(k)]
    return sequences_batch(rows, [ids(g, 1 + 3 * i) for i in range(len(rows))], pad_id=0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_causal_lm("builtin:tiny", "float32", "test")


def logps_and_grads(model: nn.Module, batch, layout: SequenceLayout | None = None):
    model.zero_grad()
    out = sequence_logps(model, batch, layout=layout or SequenceLayout())
    (out.sum * torch.linspace(0.5, 1.5, out.sum.shape[0])).sum().backward()  # every row weighs differently
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def assert_same(model, batch, layout):
    assert supports_layout(model)  # the layout really runs (no silent fallback to the plain batch)
    plain, plain_grads = logps_and_grads(model, batch)
    shared, shared_grads = logps_and_grads(model, batch, layout)
    assert torch.equal(plain.mask, shared.mask)
    torch.testing.assert_close(shared.logps, plain.logps, rtol=0, atol=1e-5)
    assert plain_grads.keys() == shared_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("make_batch", [pair_batch, group_batch])
def test_layouts_give_the_plain_log_probs_and_gradients(tiny, layout, make_batch):
    batch = make_batch()
    plan = plan_layout(batch, layout)
    real = int(batch["attention_mask"].sum())
    if layout.prefix_sharing:  # the shared prompts are in the forward once
        assert int((plan.input_ids != 0).sum()) < real
    assert_same(tiny, batch, layout)


def test_plan_of_one_pair_by_hand():
    # prompt [5, 6], chosen [7], rejected [8, 9]: one sequence 5 6 7 8 9
    batch = sequences_batch([[5, 6], [5, 6]], [[7], [8, 9]], pad_id=0)
    plan = plan_layout(batch, SequenceLayout(True))
    assert plan.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert plan.position_ids.tolist() == [[0, 1, 2, 2, 3]]  # both responses start right after the prompt
    assert plan.index[0, :3].tolist() == [0, 1, 2] and plan.index[1].tolist() == [0, 1, 3, 4]
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # chosen: prompt and itself
        [1, 1, 0, 1, 0],  # rejected's first token: prompt and itself, never the chosen token
        [1, 1, 0, 1, 1],
    ], dtype=torch.bool)  # fmt: skip
    assert torch.equal(plan.attention_mask[0, 0], expected)


def test_a_batch_is_planned_once_for_every_forward_over_it(tiny, monkeypatch):
    """A DPO step's policy and reference (a rollout's scorers and updates) share one plan of their batch."""
    import lit_pref.models.packing as packing

    calls = []
    monkeypatch.setattr(
        packing, "plan_layout", lambda b, layout: calls.append(layout) or plan_layout(b, layout)
    )
    batch, layout = pair_batch(), SequenceLayout(True)
    first = sequence_logps(tiny, batch, layout=layout)
    second = sequence_logps(tiny, batch, layout=layout)
    assert len(calls) == 1 and torch.equal(first.logps, second.logps)
    assert batch_plan(batch, SequenceLayout(True, 64)) is not batch_plan(batch, layout)  # another layout
    assert len(calls) == 3  # the batch keeps the last plan only: switching layouts plans again
    batch["input_ids"] = batch["input_ids"].clone()  # other tensors: planned anew
    batch_plan(batch, layout)
    batch["labels"][0, -1] = -100  # changed in place: planned anew
    batch_plan(batch, layout)
    assert len(calls) == 5


def test_no_response_token_sees_another_response(tiny):
    batch = group_batch(k=4)
    plan = plan_layout(batch, SequenceLayout(True, 64))
    # which original row each packed token belongs to (prompt tokens: shared, -1)
    owner = torch.full(plan.input_ids.shape, -1).view(-1)
    labelled = batch["labels"] != -100
    for b in range(batch["input_ids"].shape[0]):
        owner[plan.index[b][labelled[b]]] = b
    owner = owner.view(plan.input_ids.shape)
    mask = plan.attention_mask[:, 0]
    for r in range(mask.shape[0]):
        q, k = mask[r].nonzero(as_tuple=True)
        both = (owner[r, q] >= 0) & (owner[r, k] >= 0)
        assert torch.equal(owner[r, q][both], owner[r, k][both])  # response -> response only within a row
    # and perturbing one response leaves every other row's log-probs exactly as they were
    before = sequence_logps(tiny, batch, layout=SequenceLayout(True, 64))
    changed = {k: v.clone() for k, v in batch.items()}
    row1 = labelled[1].nonzero().squeeze(-1)
    changed["input_ids"][1, row1] = changed["labels"][1, row1] = 777
    after = sequence_logps(tiny, changed, layout=SequenceLayout(True, 64))
    others = [b for b in range(batch["input_ids"].shape[0]) if b != 1]
    assert torch.equal(after.logps[others], before.logps[others])
    assert not torch.allclose(after.logps[1], before.logps[1])


def test_block_mask_pads_see_only_themselves():
    group = torch.tensor([[0, 0, 1, -4, -5]])
    segment = torch.tensor([[0, 1, 0, 0, 0]])
    mask = block_mask(group, segment)[0, 0]
    assert mask[3].tolist() == [False, False, False, True, False]
    assert mask[2].tolist() == [False, False, True, False, False]  # a new sequence starts: block-diagonal


def test_lora_policy_and_disabled_adapter_share_prefixes():
    from lit_pref.models.loading import LoraSettings, prepare_trainable

    torch.manual_seed(0)
    policy = prepare_trainable(
        load_causal_lm("builtin:tiny", "float32", "test"), LoraSettings(r=4), False, "CAUSAL_LM"
    )
    with torch.no_grad():  # a trained-looking adapter, so adapter on and off differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = pair_batch()
    assert_same(policy, batch, SequenceLayout(True, 48))
    reference = lit_pref.DisabledAdapter()
    reference.attach(type("Owner", (), {"policy": policy})())
    plain = reference.token_logps(batch)
    reference.use_layout(SequenceLayout(True))
    torch.testing.assert_close(reference.token_logps(batch).logps, plain.logps, rtol=0, atol=1e-5)
    assert not torch.allclose(plain.sum, sequence_logps(policy, batch).sum)  # the adapter really was off


def test_eager_attention_takes_the_additive_mask():
    torch.manual_seed(0)
    model = load_causal_lm("builtin:tiny", "float32", "test")
    model.config._attn_implementation = "eager"
    assert_same(model, pair_batch(), SequenceLayout(True, 48))


def test_prefix_sharing_is_on_by_default_where_rows_share_prompts():
    assert lit_pref.DPO().layout == lit_pref.RewardModel().layout == SequenceLayout(True)
    oracle = lit_pref.BradleyTerryOracle(lit_pref.TaskReward("reviews"))
    assert lit_pref.MPO(oracle=oracle).layout.prefix_sharing  # K samples of a prompt
    # one response per prompt: nothing to share
    assert lit_pref.SFT().layout == lit_pref.OutcomeModel().layout == SequenceLayout()
    assert lit_pref.DPO(prefix_sharing=False, pack_tokens=64).layout == SequenceLayout(False, 64)
    assert lit_pref.SFT(prefix_sharing=True).layout == SequenceLayout(True)


def test_the_default_falls_back_with_one_warning_on_models_without_a_mask_path():
    from lit_pref.models import packing
    from lit_pref.models.logprobs import layout_inputs

    class Flex(nn.Module):
        config = type("Config", (), {"_attn_implementation": "flex_attention"})()

    batch = pair_batch()
    packing._warned.discard("flex_attention")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # every forward of a run: one warning in all
            inputs, plan = layout_inputs(Flex(), batch, lit_pref.DPO().layout)
            assert plan is None and inputs["input_ids"] is batch["input_ids"]  # the plain batch, as given
    assert [str(w.message) for w in caught if "flex_attention" in str(w.message)] == [
        "lit_pref: prefix_sharing / pack_tokens need a model whose attention takes a custom 4D mask (attn_implementation "
        "'sdpa' or 'eager'); this model uses 'flex_attention', so batches keep the plain padded layout (same "
        "log-probs, no saving). Load the model with attn_implementation='sdpa' to share prefixes, or set "
        "model.init_args.prefix_sharing: false and no pack_tokens to keep it without this warning"
    ]


def test_models_without_a_mask_path_and_left_padding_keep_the_plain_layout(tiny):
    class Stub(nn.Module):
        config = type("Config", (), {"_attn_implementation": "flash_attention_2"})()

    with pytest.warns(UserWarning, match="flash_attention_2.*plain padded layout"):
        assert not supports_layout(Stub())
    batch = pair_batch()
    left = {
        k: v.flip(-1) for k, v in batch.items()
    }  # left-padded rows (reversed tokens: any content will do)
    torch.testing.assert_close(
        sequence_logps(tiny, left, layout=SequenceLayout(True)).logps, sequence_logps(tiny, left).logps,
        rtol=0, atol=0,
    )  # fmt: skip


def test_module_option_reaches_policy_reference_and_precomputed_source():
    module = lit_pref.DPO(prefix_sharing=True, pack_tokens=64, reference=lit_pref.Precomputed())
    module.configure_model()
    assert module.layout == SequenceLayout(True, 64)
    assert module.reference.layout == module.reference.source.layout == module.layout
    batch = pair_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tiny model takes the mask: no fallback warning
        shared = module.reference.source.token_logps(batch)
    module.reference.use_layout(SequenceLayout())
    torch.testing.assert_close(
        shared.logps, module.reference.source.token_logps(batch).logps, rtol=0, atol=1e-5
    )


def test_reward_model_scores_with_shared_prompts():
    torch.manual_seed(0)
    module = lit_pref.RewardModel(prefix_sharing=True)
    module.configure_model()
    batch = pair_batch()
    plain = module.scores(batch["input_ids"], batch["attention_mask"])
    shared = module.scores(batch["input_ids"], batch["attention_mask"], batch["labels"])
    torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)


def dpo_losses(reference_kind: str, prefix_sharing: bool = False, **layout) -> list[float]:
    pl.seed_everything(0, verbose=False)
    rec = Recorder()
    reference = lit_pref.Precomputed() if reference_kind == "precomputed" else None
    module = lit_pref.DPO(lr=1e-3, reference=reference, prefix_sharing=prefix_sharing, **layout)
    trainer(4, [rec], limit_val_batches=0).fit(module, data_module(max_rows=32, batch_size=8))
    return [loss for _, loss, _ in rec.steps]


@pytest.mark.parametrize("reference_kind", ["frozen", "precomputed"])
def test_seeded_dpo_runs_equal_with_prefix_sharing_on_and_off(reference_kind):
    plain = dpo_losses(reference_kind)
    shared = dpo_losses(reference_kind, prefix_sharing=True, pack_tokens=96)
    assert len(plain) == 4 and plain[-1] < plain[0]  # it trained, so equality means something
    assert shared == pytest.approx(plain, abs=1e-5)


class GradientProbe(Callback):
    """The loss and a copy of every gradient of a (one-step) run's optimizer step."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads = [p.grad.clone() for p in module.policy.parameters()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.loss = float(outputs["loss"])


def mpo_first_update(prefix_sharing: bool) -> GradientProbe:
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(
        train="task:reviews", format="prompt", task_options={"num_rows": 16}, text_as_chat=True,
        max_length=40, max_prompt_length=24, batch_size=2,
    )  # fmt: skip
    module = lit_pref.MPO(
        oracle=lit_pref.BradleyTerryOracle(lit_pref.TaskReward("reviews"), tau=0.25), num_samples=4,
        sampling=lit_pref.SamplingConfig(max_new_tokens=8), prefix_sharing=prefix_sharing,
    )  # fmt: skip
    probe = GradientProbe()
    trainer(1, [probe], limit_val_batches=0).fit(module, data)
    return probe


def test_seeded_mpo_update_equals_with_prefix_sharing_on_and_off():
    """A sampled rollout (the same samples: both runs draw them from the same weights), scored by the policy,
    snapshot and magnet in each layout, and its update: the same loss and gradients to float precision.
    Trajectories are not compared: after an update the two layouts' weights differ in the last digits, and Adam's
    first steps (about lr * sign(g)) and near-tie sampled tokens amplify that differently on different CPUs."""
    plain, shared = mpo_first_update(False), mpo_first_update(True)
    assert plain.loss > 0
    # the loss squares log-ratio sums of ~-60, whose float32 rounding (~4e-6) depends on the summation order
    assert shared.loss == pytest.approx(plain.loss, rel=1e-4)
    a, b = torch.cat([g.flatten() for g in plain.grads]), torch.cat([g.flatten() for g in shared.grads])
    assert float((a - b).norm() / a.norm()) < 1e-4


def test_exact_mpo_iterations_equal_with_prefix_sharing_on_and_off():
    """Exact mode on a game (every response, no sampling): many iterations, each scored in both layouts."""
    from tests.algorithms.test_mpo import game_run

    histories = [game_run(updates=5, iterations=8, prefix_sharing=sharing)[1] for sharing in (False, True)]
    gaps = [[h[1] for h in history] for history in histories]
    assert len(gaps[0]) >= 8 and len(set(gaps[0])) > 1
    assert gaps[1] == pytest.approx(gaps[0], abs=1e-5)


def test_config_fragment_runs_after_a_method_config(tmp_path):
    run = fit_dpo_config_with("prefix_sharing.yaml", tmp_path)
    assert run.model.layout == SequenceLayout(True, 128)
    assert all(p.layout == run.model.layout for p in run.model.companions().values())
    assert run.trainer.global_step == 2
