"""Probe MPO's inner updates: one self-play sample, then several optimizer settings each take N updates on it.

For each setting, prints the pairwise MMD regression loss before every update and the largest change of a
sequence log-prob (nats) the updates caused. This is how docs/mpo.md's diagnosis of the real-model divergence
was measured:

    python tools/mpo_step_probe.py --policy builtin:smollm2-135m --updates 4 \
        --setting full:1e-5 --setting full:1e-6 --setting full:1e-7 --setting lora:1e-5 --setting lora:1e-4
"""

from __future__ import annotations

import argparse
import copy

import torch

import lit_pref
from lit_pref.losses import group_win_rates, mpo_pairwise_loss
from lit_pref.models.batching import sequences_batch
from lit_pref.models.loading import load_causal_lm, load_tokenizer, prepare_trainable
from lit_pref.models.logprobs import sequence_logps
from lit_pref.sampling import SamplingConfig, generate
from lit_pref.tasks import ReviewsTask


def self_play(policy, tokenizer, prompts: list[str], k: int, max_new_tokens: int, seed: int):
    """K sampled responses per prompt: (prompt ids per row, response ids per row, response texts per prompt)."""
    rows = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_dict=False
        )
        for p in prompts
        for _ in range(k)
    ]
    out = generate(policy, tokenizer, rows, SamplingConfig(max_new_tokens=max_new_tokens, seed=seed),
                   batch_size=len(rows))  # fmt: skip
    responses, texts = out.completions, out.texts
    return rows, responses, [texts[i : i + k] for i in range(0, len(texts), k)]


def probe(base, seqs, n, k, win_rates, kind: str, lr: float, updates: int, eta: float, alpha: float):
    policy = copy.deepcopy(base)
    if kind == "lora":
        policy = prepare_trainable(policy, lit_pref.LoraSettings(r=8), gradient_checkpointing=False)
    policy.train()
    with torch.no_grad():
        start = sequence_logps(policy, seqs).sum.view(n, k)
    snapshot = magnet = start  # the first iteration: pi_t = pi_ref = the starting policy
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    losses, moved = [], 0.0
    for _ in range(updates):
        logps = sequence_logps(policy, seqs).sum.view(n, k)
        moved = max(moved, float((logps.detach() - start).abs().max()))
        loss = mpo_pairwise_loss(logps, snapshot, magnet, win_rates, eta, alpha).mean()
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        logps = sequence_logps(policy, seqs).sum.view(n, k)
        losses.append(float(mpo_pairwise_loss(logps, snapshot, magnet, win_rates, eta, alpha).mean()))
        moved = max(moved, float((logps - start).abs().max()))
    return losses, moved


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", default="builtin:smollm2-135m")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--setting", action="append", help="full:<lr> or lora:<lr> (repeatable)")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.policy)
    base = load_causal_lm(args.policy)
    prompts = [row["prompt"] for row in ReviewsTask(seed=0).rows("prompt", "train")[: args.prompts]]
    rows, responses, texts = self_play(
        base, tokenizer, prompts, args.num_samples, args.max_new_tokens, seed=0
    )
    oracle = lit_pref.CyclicStyleOracle(reward=lit_pref.TaskReward(task="reviews"), tau=0.25)
    win_rates = group_win_rates(oracle(prompts, texts))
    seqs = sequences_batch(rows, responses, tokenizer.pad_token_id)
    lengths = [len(r) for r in responses]
    print(f"response lengths {min(lengths)}..{max(lengths)} tokens; win rates {win_rates.tolist()}")
    for setting in args.setting or ["full:1e-5"]:
        kind, lr = setting.split(":")
        losses, moved = probe(base, seqs, args.prompts, args.num_samples, win_rates, kind, float(lr),
                              args.updates, args.eta, args.alpha)  # fmt: skip
        print(f"{setting:>12}: loss per update {' -> '.join(f'{x:.3g}' for x in losses)}; "
              f"max |change of a sequence log-prob| {moved:.2f} nats", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
