"""IRFT / SPIN: the expected-gradient identities, stage refreshes, cached negatives, resume, a task run."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_pref
from lit_pref.errors import ConfigError
from lit_pref.losses import irft_loss
from lit_pref.models.batching import sequences_batch
from lit_pref.models.loading import load_causal_lm
from lit_pref.sampling import GREEDY, SamplingConfig, generate
from lit_pref.tasks.listops import ListOpsTask
from tests.helpers import Recorder, trainer

NEW_TOKENS = 6


def listops_data(num_rows: int = 64, batch_size: int = 8, **kwargs) -> lit_pref.PreferenceDataModule:
    return lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", train="task:listops", format="demonstration",
        task_options={"num_rows": num_rows, **kwargs}, text_as_chat=True, max_length=32, max_prompt_length=16,
        batch_size=batch_size,
    )  # fmt: skip


def irft(**kwargs) -> lit_pref.IRFT:
    kwargs.setdefault("sampling", SamplingConfig(do_sample=False, max_new_tokens=NEW_TOKENS))
    kwargs.setdefault("lr", 1e-2)
    return lit_pref.IRFT(policy="builtin:tiny", **kwargs)


# -- the expected-gradient identities (ALGORITHMS.md) --------------------------------------------------------


@pytest.mark.parametrize(("link", "factor"), [("sigmoid", 0.5), ("linear", 1.0)])
def test_expected_gradient_at_a_stage_start_is_a_multiple_of_the_sft_gradient(link, factor):
    """Responses of one token: pi_s's whole response set is the vocabulary, so E_{y~ ~ pi_s} is an exact sum.
    At a stage start (theta = theta_s) it equals factor * beta * grad of the summed-token NLL of the demo."""
    torch.manual_seed(0)
    beta = 0.1
    module = irft(beta=beta, link=link)
    module.configure_model()
    policy, vocab = module.policy, module.tokenizer
    prompt = vocab("sort: three one", add_special_tokens=False)["input_ids"]
    demo = vocab(" one", add_special_tokens=False)["input_ids"]
    candidates = [[token] for token in range(len(vocab))]
    n = len(candidates)
    seqs = sequences_batch([prompt] * (n + 1), [demo] + candidates, vocab.pad_token_id)
    with torch.no_grad():
        reference = module.policy_logps(seqs).sum  # the frozen stage reference = theta at the stage start
    weights = reference[1:].exp()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-5)  # the whole response set is enumerated

    logps = module.policy_logps(seqs).sum
    losses, _, _ = irft_loss(
        logps[:1].expand(n), logps[1:], reference[:1].expand(n), reference[1:], beta, link
    )
    expected = torch.autograd.grad((weights * losses).sum(), list(policy.parameters()), allow_unused=True)
    if link == "sigmoid":
        assert (weights * losses).sum().item() == pytest.approx(math.log(2), abs=1e-6)
    nll = -module.policy_logps(seqs).sum[0]
    sft = torch.autograd.grad(nll, list(policy.parameters()), allow_unused=True)
    for got, want in zip(expected, sft):
        if want is None:
            continue
        torch.testing.assert_close(got, factor * beta * want, atol=1e-5, rtol=1e-4)


def test_hinge_link_and_loss_by_hand():
    demo, sample = torch.tensor([-2.0, -1.0]), torch.tensor([-3.0, -1.0])
    ref_demo, ref_sample = torch.tensor([-2.5, -1.0]), torch.tensor([-2.0, -1.5])
    beta = 0.5
    delta = torch.tensor([0.5 - (-1.0), 0.0 - 0.5])  # (l - l_s)(y*) - (l - l_s)(y~)
    for link, want in (
        ("sigmoid", -torch.nn.functional.logsigmoid(beta * delta)),
        ("hinge", torch.relu(1 - beta * delta)),
        ("linear", -beta * delta),
    ):
        losses, demo_reward, sample_reward = irft_loss(demo, sample, ref_demo, ref_sample, beta, link)
        torch.testing.assert_close(losses, want)
        torch.testing.assert_close(demo_reward, beta * (demo - ref_demo))
        torch.testing.assert_close(sample_reward, beta * (sample - ref_sample))


# -- the stage schedule --------------------------------------------------------------------------------------


class StageProbe(Callback):
    """At every optimizer step (after backward, before the update): the stage, and whether the reference's
    weights equal the policy's."""

    def __init__(self):
        self.rows: list[tuple[int, int, bool]] = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        same = all(
            torch.equal(a, b) for a, b in zip(module.reference.model.parameters(), module.policy.parameters())
        )
        self.rows.append((trainer.global_step, int(module.stage), same))


def test_t_stages_refresh_t_times_per_epoch_and_each_stage_starts_at_log_2():
    pl.seed_everything(0, verbose=False)
    module, probe, rec = irft(stages=2), StageProbe(), Recorder()
    trainer(16, [probe, rec], limit_val_batches=0).fit(module, listops_data())  # 2 epochs of 8 batches
    assert int(module.reference.refreshes) == 4  # T = 2 stages x 2 epochs
    assert [stage for _, stage, _ in probe.rows] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    starts = {0, 4, 8, 12}
    for (step, _, same), (_, loss, _) in zip(probe.rows, rec.steps):
        assert same == (step in starts)  # the reference is the policy exactly at each stage start
        if step in starts:
            assert loss == pytest.approx(math.log(2), abs=1e-6)
        else:
            assert loss != pytest.approx(math.log(2), abs=1e-4)


def test_cached_negatives_are_the_stage_references_greedy_generations_and_are_reused():
    pl.seed_everything(0, verbose=False)
    module = irft(epochs_per_stage=2)  # SPIN: one stage of two epochs against one frozen opponent
    batches = []

    class Batches(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            batches.append((batch["index"].tolist(), batch["prompt_ids"]))

    trainer(8, [Batches()], limit_val_batches=0).fit(module, listops_data(num_rows=32))  # 2 epochs of 4
    assert int(module.reference.refreshes) == 1
    assert module.tokens.generated > 0
    prompts = {i: p for keys, ps in batches for i, p in zip(keys, ps)}
    assert sorted(module._negatives) == list(range(32))
    # the reference never moved: it is the starting model, whose greedy responses the cache must hold
    start = load_causal_lm("builtin:tiny", "float32", "policy").eval()
    fresh = generate(
        start, module.tokenizer, [prompts[i] for i in range(32)], GREEDY, max_new_tokens=NEW_TOKENS
    )
    assert [module._negatives[i] for i in range(32)] == fresh.completions
    # generated once: the second epoch of the stage reused every negative
    per_row = fresh.generated_tokens
    assert module.tokens.generated == pytest.approx(per_row)


def test_stages_must_fit_in_an_epoch_and_the_reference_must_have_weights():
    with pytest.raises(ConfigError, match=r"stages \(9\) is more than the training batches per epoch \(8\)"):
        trainer(2, limit_val_batches=0).fit(irft(stages=9), listops_data())
    with pytest.raises(ConfigError, match="use lit_pref.RefreshableCopy"):
        module = irft(reference=lit_pref.DisabledAdapter(), lora={"r": 4})
        trainer(2, limit_val_batches=0).fit(module, listops_data())


def test_a_run_that_ends_before_its_stages_do_says_how_many_stages_ran():
    with pytest.warns(UserWarning, match=r"stages is 4 per epoch \(8 batches, 2 per stage\), but trainer.max_steps "
                      r"3 ends the run in stage 2: only 2 reference"):  # fmt: skip
        trainer(3, limit_val_batches=0).fit(irft(stages=4), listops_data())


def test_mix_previous_adds_the_previous_stages_negatives():
    pl.seed_everything(0, verbose=False)
    module = irft(epochs_per_stage=1, mix_previous=True)
    pairs = []

    class Pairs(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            pairs.append(module._rollout.num_pairs / module._rollout.num_prompts)

    trainer(8, [Pairs()], limit_val_batches=0).fit(module, listops_data(num_rows=32))
    assert pairs == [1.0] * 4 + [2.0] * 4  # stage 1 also contrasts with stage 0's responses


@pytest.mark.parametrize("resume_step", [3, 6])  # mid-stage 0, and mid-stage 1 (after a refresh and a reset)
def test_resume_in_mid_stage_reproduces_the_uninterrupted_run(tmp_path, resume_step):
    def run(ckpt_path=None):
        pl.seed_everything(0, verbose=False)
        module, rec = irft(stages=2, warmup_steps=2, lr_schedule="linear"), Recorder()
        callbacks = [rec, ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)]
        trainer(8, callbacks, limit_val_batches=0, enable_checkpointing=True).fit(
            module, listops_data(), ckpt_path=ckpt_path
        )
        return module, rec

    full, full_rec = run()
    resumed, rec = run(tmp_path / f"epoch=0-step={resume_step}.ckpt")
    assert [loss for _, loss, _ in rec.steps] == pytest.approx(
        [loss for _, loss, _ in full_rec.steps[resume_step:]], abs=1e-6
    )
    assert int(resumed.reference.refreshes) == int(full.reference.refreshes) == 2
    for model in ("policy", "reference"):
        mine = (
            getattr(resumed, model).parameters()
            if model == "policy"
            else resumed.reference.model.parameters()
        )
        theirs = getattr(full, model).parameters() if model == "policy" else full.reference.model.parameters()
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# -- a task run ----------------------------------------------------------------------------------------------


def greedy_exact(module, prompts: list[str]) -> list[float]:
    renderer = module.renderer()
    answers = generate(module.policy.eval(), module.tokenizer, [renderer.prompt_ids(p) for p in prompts], GREEDY,
                       batch_size=64, max_new_tokens=16)  # fmt: skip
    return ListOpsTask(reward="exact").reward(prompts, answers.texts)


@pytest.mark.slow
def test_a_short_irft_run_raises_exact_match_on_its_prompts_above_the_starting_model():
    """IRFT contrasts each demonstration with the stage reference's greedy answer, so a prompt it already answers
    exactly gives no gradient and a wrong one is pushed towards its demonstration. Measured on the prompts it
    trains on: on held-out lists this tiny model does not improve (docs/irft.md)."""
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", train="task:listops", format="demonstration", task_options={"num_rows": 128},
        text_as_chat=True, max_length=40, max_prompt_length=24, batch_size=8,
    )  # fmt: skip
    prompts = [row["prompt"] for row in ListOpsTask(num_rows=128).rows("prompt", "train")]
    module = lit_pref.IRFT(policy="builtin:tiny-sft-listops", lr=3e-5, stages=2,
                           sampling=SamplingConfig(do_sample=False, max_new_tokens=16))  # fmt: skip
    module.hparams.update(text_as_chat=True, max_length=40, max_prompt_length=24)
    module.configure_model()
    before = greedy_exact(module, prompts)
    trainer(320, limit_val_batches=0, max_epochs=20).fit(module.train(), data)  # 20 epochs, 2 stages each
    after = greedy_exact(module, prompts)
    fixed = sum(a > b for a, b in zip(after, before))
    broken = sum(a < b for a, b in zip(after, before))
    print(
        f"IRFT: {sum(before):.0f} of {len(prompts)} exact at the start, {fixed} fixed, {broken} broken"
    )  # CI logs
    assert 0.3 < sum(before) / len(prompts) < 0.7  # the start is good but imperfect: there is room both ways
    # measured with the shipped start (57 of 128 right): fixed / broken 16 / 7 (AVX-512 kernels, 2 threads and 1),
    # 14 / 8 (AVX2 kernels), 13 / 7 (scalar kernels); training amplifies the kernels' float differences, so the
    # bound leaves room below the smallest margin seen (net 6, ratio 1.75)
    assert fixed - broken >= 3 and fixed >= 1.5 * broken, (fixed, broken)
