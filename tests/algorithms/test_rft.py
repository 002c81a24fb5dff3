"""RFT: the reward step and the policy step by hand, the KL term alone under a constant reward, two trained models
in checkpoints and exports, and a short run whose reward learns to tell demonstrations from the policy's samples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lit_pref
from lit_pref.errors import ConfigError
from lit_pref.losses import kl_regularized_reinforce_loss, leave_one_out_advantages
from lit_pref.models.batching import sequences_batch
from lit_pref.sampling import SamplingConfig
from tests.helpers import trainer

NEW_TOKENS = 6


def listops_data(rows_format: str = "demonstration", num_rows: int = 32, batch_size: int = 4):
    return lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", train="task:listops", format=rows_format, task_options={"num_rows": num_rows},
        text_as_chat=True, max_length=32, max_prompt_length=16, batch_size=batch_size,
    )  # fmt: skip


def rft(**kwargs) -> lit_pref.RFT:
    kwargs.setdefault("sampling", SamplingConfig(max_new_tokens=NEW_TOKENS))
    kwargs.setdefault("num_samples", 2)
    kwargs.setdefault("lr", 1e-3)
    return lit_pref.RFT(policy="builtin:tiny", **kwargs)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -- the reward step by hand ----------------------------------------------------------------------------------


def test_reward_step_loss_and_gradient_by_hand_on_two_pairs(monkeypatch):
    """One prompt, K = 2 own samples: two (demonstration, sample) pairs, plus one weighted preference pair."""
    module = rft(preference_weight=0.5)
    scores = torch.tensor([1.0, 0.5, 2.0, -1.0], requires_grad=True)  # r(y*), r(y~1), r(y~2), r(y_rejected)
    monkeypatch.setattr(module, "rewards", lambda seqs: scores)
    rollout = SimpleNamespace(num_prompts=1, k=2, num_rejected=1, scored=None)
    loss, demo, sample = module.reward_step_loss(rollout)

    # -log sigma(d) = softplus(-d): pairs d = 1 - 0.5 and 1 - 2, averaged; the preference pair d = 1 - (-1)
    want = (softplus(-0.5) + softplus(1.0)) / 2 + 0.5 * softplus(-2.0)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    loss.backward()
    # d softplus(-d) / dd = -sigmoid(-d)
    g1, g2, g3 = -sigmoid(-0.5) / 2, -sigmoid(1.0) / 2, -0.5 * sigmoid(-2.0)
    torch.testing.assert_close(scores.grad, torch.tensor([g1 + g2 + g3, -g1, -g2, -g3]))
    assert demo.tolist() == [1.0] and sample.tolist() == [[0.5, 2.0]]


def test_reward_gradient_reaches_the_scalar_head_as_bradley_terry_says():
    """On the real reward model: d loss / d head = mean over pairs of -sigmoid(r~ - r*) (h* - h~), with h the
    hidden state at each sequence's last token."""
    torch.manual_seed(0)
    module = rft()
    module.configure_model()
    vocab = module.tokenizer
    ids = lambda text: vocab(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, demo, samples = ids("sort: two one"), ids(" one two"), [ids(" two"), ids(" one one three")]
    scored = sequences_batch([prompt] * 3, [demo, *samples], vocab.pad_token_id)
    loss, r_demo, r_sample = module.reward_step_loss(
        SimpleNamespace(num_prompts=1, k=2, num_rejected=0, scored=scored)
    )
    head = module.reward_model.score.weight
    (got,) = torch.autograd.grad(loss, [head])

    body = module.reward_model.model
    hidden = body(input_ids=scored["input_ids"], attention_mask=scored["attention_mask"]).last_hidden_state
    last = scored["attention_mask"].sum(-1) - 1
    h = hidden[torch.arange(3), last].detach()
    weights = torch.sigmoid(r_sample - r_demo[:, None]).detach()[0]  # (2,)
    want = -((weights[:, None] * (h[0] - h[1:])).mean(0))
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)


# -- the policy step by hand ----------------------------------------------------------------------------------


def test_leave_one_out_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    # each sample's baseline is the mean of the OTHER samples of its prompt
    want = torch.tensor([[1 - 4.0, 2 - 3.5, 6 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0.0]])
    torch.testing.assert_close(leave_one_out_advantages(rewards), want)
    with pytest.raises(ValueError, match="K >= 2"):
        leave_one_out_advantages(torch.ones(3, 1))


def test_reinforce_gradient_by_hand_with_the_kl_in_the_reward():
    policy = torch.tensor([[-2.0, -1.0]], requires_grad=True)
    reference = torch.tensor([[-2.5, -1.0]])
    rewards = torch.tensor([[1.0, 0.0]])
    beta = 0.2
    losses, kl, advantages = kl_regularized_reinforce_loss(policy, reference, rewards, beta)
    # r' = r - beta (l - l_ref) = [1 - 0.1, 0 - 0]; K = 2: A = [r'1 - r'2, r'2 - r'1]
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[0.9, -0.9]]))
    losses.sum().backward()
    torch.testing.assert_close(policy.grad, -advantages / 2)  # loss = -mean_i A_i l_i


def test_a_constant_reward_leaves_only_the_kl_term():
    """With every sample rewarded alike the advantages of r vanish: the policy gradient is the KL term's (the same
    whatever the constant) and exactly zero when beta = 0."""
    torch.manual_seed(0)
    module = rft()
    module.configure_model()
    vocab = module.tokenizer
    prompt = vocab("copy: one two", add_special_tokens=False)["input_ids"]
    seqs = sequences_batch([prompt] * 4, [[5, 6], [7], [8, 9, 10], [11]], vocab.pad_token_id)
    params = [p for p in module.policy.parameters() if p.requires_grad]
    with torch.no_grad():
        reference = module.policy_logps(seqs).sum.view(2, 2) + torch.tensor([[0.3, -0.2], [0.0, 0.5]])

    def gradient(reward: float, beta: float) -> list[torch.Tensor]:
        policy = module.policy_logps(seqs).sum.view(2, 2)
        losses, _, _ = kl_regularized_reinforce_loss(policy, reference, torch.full((2, 2), reward), beta)
        return torch.autograd.grad(losses.mean(), params, allow_unused=True)

    for got, other in zip(gradient(3.0, 0.1), gradient(-7.0, 0.1)):
        if got is not None:
            torch.testing.assert_close(got, other)
    moved = [g for g in gradient(3.0, 0.1) if g is not None]
    assert max(g.abs().max().item() for g in moved) > 1e-4  # the KL term does move the policy
    assert all(g is None or not g.any() for g in gradient(3.0, 0.0))


def test_a_constant_reward_and_beta_zero_leave_the_policy_untouched_in_training():
    """End to end: a reward head fixed at 0 (reward lr 0) and beta = 0 give AdamW zero gradients, so the policy's
    weights stay bit-identical over several optimizer steps; with beta > 0 the KL term moves them (the policy
    starts away from the initial model's copy: at the copy itself the KL gradient is zero too)."""
    results = {}
    for beta in (0.0, 0.1):
        torch.manual_seed(0)
        module = rft(beta=beta, reward_lr=0.0)
        module.configure_model()
        torch.nn.init.zeros_(module.reward_model.score.weight)
        with torch.no_grad():
            for p in module.policy.parameters():
                p.add_(0.02 * torch.randn_like(p))
        before = [p.detach().clone() for p in module.policy.parameters()]
        trainer(3).fit(module, listops_data())
        results[beta] = all(torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))
    assert results == {0.0: True, 0.1: False}


# -- options, checkpoints and exports -------------------------------------------------------------------------


def test_options_that_would_bias_the_policy_gradient_are_refused():
    with pytest.raises(ConfigError, match="updates_per_rollout"):
        rft(updates_per_rollout=2)
    with pytest.raises(ConfigError, match="do_sample"):
        rft(sampling=SamplingConfig(do_sample=False))
    with pytest.raises(ConfigError, match="num_samples"):
        rft(num_samples=1)


def test_both_models_are_trained_checkpointed_resumed_and_exported(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(0)
    module = rft()
    module.configure_model()
    start = {
        name: [p.detach().clone() for p in m.parameters()] for name, m in module.trained_models().items()
    }
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    export = lit_pref.ExportHF(dirpath=str(tmp_path / "export"))
    fit = trainer(2, callbacks=[checkpoints, export], enable_checkpointing=True, default_root_dir=tmp_path)
    fit.fit(module, listops_data())
    for name, model in module.trained_models().items():  # both models were optimized
        assert not all(torch.equal(a, b) for a, b in zip(start[name], model.parameters())), name

    saved = torch.load(checkpoints.last_model_path, weights_only=False)["state_dict"]
    for prefix, model in (("policy.", module.policy), ("reward_model.", module.reward_model)):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(saved[prefix + key], value)
    resumed = rft()
    trainer(3).fit(resumed, listops_data(), ckpt_path=checkpoints.last_model_path)
    assert int(resumed.rollouts) == 3  # two restored, one more

    seqs = sequences_batch([[5, 6, 7]], [[8, 9]], module.tokenizer.pad_token_id)
    with torch.no_grad():
        policy = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
        reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export_reward_model")
        torch.testing.assert_close(policy(input_ids=seqs["input_ids"]).logits,
                                   module.policy(input_ids=seqs["input_ids"]).logits)  # fmt: skip
        torch.testing.assert_close(reward(input_ids=seqs["input_ids"]).logits.squeeze(-1),
                                   module.rewards(seqs))  # fmt: skip


def test_preference_rows_train_the_reward_on_their_pairs_too():
    """On preference rows the chosen side is the demonstration; with preference_weight the pairs enter the
    reward step (more reward loss at the same scores), and without it they are left out."""
    torch.manual_seed(0)
    losses = {}
    for weight in (0.0, 1.0):
        module = rft(preference_weight=weight)
        data = listops_data("pairwise")
        data.setup("fit")
        module.configure_model()
        batch = next(iter(data.train_dataloader()))
        torch.manual_seed(1)
        rollout = module.rollout(batch)
        assert rollout.num_prompts == 4 and rollout.num_rejected == (4 if weight else 0)
        losses[weight] = module.reward_step_loss(rollout)[0].item()
    assert losses[1.0] > losses[0.0]


# -- a short run ----------------------------------------------------------------------------------------------


def test_a_short_run_learns_a_reward_that_prefers_demonstrations():
    """From a random policy the reward quickly learns to rank demonstrations above the policy's own samples:
    the margin r(y*) - r(y~) grows and the reward loss falls; validation reports the same metrics under val/."""
    torch.manual_seed(0)
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer_, module, outputs, batch, batch_idx):
            m = trainer_.callback_metrics
            seen.append((float(m["rft/reward_demo"] - m["rft/reward_sample"]), float(m["rft/reward_loss"])))

    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:tiny", train="task:listops", val="task:listops", format="demonstration",
        task_options={"num_rows": 48}, text_as_chat=True, max_length=32, max_prompt_length=16, batch_size=4,
    )  # fmt: skip
    fit = trainer(12, callbacks=[Watch()], limit_val_batches=1, val_check_interval=12)
    fit.fit(rft(lr=1e-3), data)
    first, last = seen[:4], seen[-4:]
    mean = lambda rows, i: sum(r[i] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, 0) > mean(first, 0) + 1.0
    assert mean(last, 1) < mean(first, 1) / 2
    assert {"val/reward_accuracy", "val/reward_demo", "val/kl", "val/pg_loss"} <= set(fit.callback_metrics)


def test_lora_on_both_models_resumes_and_the_kl_reference_is_the_adapter_off_policy(tmp_path):
    lora = lit_pref.LoraSettings(r=4, alpha=8)
    torch.manual_seed(0)
    module = rft(lora=lora)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(2, callbacks=[checkpoints], enable_checkpointing=True, default_root_dir=tmp_path).fit(
        module, listops_data()
    )
    assert isinstance(module.reference, lit_pref.DisabledAdapter)
    trainable = {n for n, p in module.reward_model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("lora_" not in n and "score" not in n for n in trainable)  # the body is frozen
    saved = torch.load(checkpoints.last_model_path, weights_only=True)
    assert not any(k.startswith("policy.") and "lora_" not in k for k in saved["state_dict"])  # adapter only
    resumed = rft(lora=lora)
    trainer(2).fit(resumed, listops_data(), ckpt_path=checkpoints.last_model_path)  # restores, no more steps
    state = resumed.state_dict()
    for key, value in saved["state_dict"].items():  # both models (and their LoRA adapters) come back exactly
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert int(resumed.rollouts) == 2
