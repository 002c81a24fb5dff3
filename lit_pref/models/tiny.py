"""`builtin:tiny`: a small Llama-style causal LM and byte-level BPE tokenizer, built locally in seconds.

Nothing is downloaded. The tokenizer is trained on a corpus generated here from a fixed word list, the model
is initialized from a fixed seed, and both are saved as a standard Hugging Face folder that
`AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load like any other. `builtin:tiny` itself ships with
lit_pref (models/artifacts.py: the init draws from vectorized kernels that differ on CPUs without AVX2); the other
sizes are built on first use.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Every message is <|role|>content<|end|>; <|end|> is the EOS token, so generation stops after one turn.
CHAT_TEMPLATE = (
    "{{ '<|bos|>' }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_WORDS = """
the a an and or but so of to in on at for with from by about as is are was were be been being it this that these
those i you he she we they me my your our their its not no yes very really quite too also just only more most less
least than then there here what which who how why when where can could will would should may might must do does did
have has had get got make made take took give gave go went come came see saw say said know knew think thought feel
felt look looked use used find found work worked try tried write wrote read review line one two three four five six
seven eight nine ten first last new old good great excellent wonderful amazing fantastic lovely nice fine pleasant
perfect brilliant superb delightful happy glad love loved like liked enjoy enjoyed recommend best better beautiful
bad terrible awful horrible poor worst worse disappointing boring ugly broken sad angry hate hated dislike useless
annoying cheap flimsy slow fast quick solid sturdy reliable comfortable simple easy hard difficult heavy light small
large big little long short clean dirty quiet loud bright dark warm cold soft sharp smooth rough fresh stale okay
average ordinary plain decent mediocre neutral normal standard typical usual regular camera phone laptop kettle
lamp chair table book movie album jacket backpack bicycle blender toaster headphones speaker keyboard mouse monitor
watch umbrella tent mattress pillow blanket mug bottle knife pan oven fridge printer router tablet charger cable
shoes boots hat scarf gloves coffee tea bread pizza pasta soup salad hotel restaurant cafe museum park game toy
product item thing price quality battery screen sound picture design size color colour weight build service delivery
package box user assistant answer question add plus minus times equals number sum result word words sentence story
day week month year time today yesterday tomorrow morning evening night people person friend family child children
man woman world city home house room door window car road water food music art film song show place way part
because if while after before during until since although though however therefore still yet again always never
often sometimes usually maybe perhaps almost enough every each all some any many much few several other another same
different whole half full empty open closed high low right wrong true false left up down out over under into onto
""".split()


def _corpus(seed: int = 0, n_sentences: int = 6000) -> list[str]:
    """Deterministic training text: the word list plus random sentences, numbers and chat-like lines."""
    rng = random.Random(seed)
    lines = [" ".join(_WORDS[i : i + 12]) for i in range(0, len(_WORDS), 12)]
    for _ in range(n_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "!", "?", ","])
        lines.append(sentence)
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"What is {a} plus {b}? The answer is {a + b}.")
    return lines


def _build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(folder)
    return hf


SIZES = {  # name -> (hidden, intermediate, layers, heads)
    "tiny": (128, 344, 4, 4),  # 1.0 M parameters
    "tiny-large": (256, 688, 4, 4),  # 3.7 M parameters
    "tiny-smollm2": (128, 344, 4, 4),  # 7.1 M parameters, 6.3 M of them the embedding of SmolLM2's 49k tokens
}
#: the built-in whose tokenizer each size uses: models that share one can be WSPO's weak and strong sides
#: (tiny and tiny-large; tiny-smollm2 and builtin:smollm2-135m)
TOKENIZER_OF = {"tiny": "builtin:tiny", "tiny-large": "builtin:tiny", "tiny-smollm2": "builtin:smollm2-135m"}


def _build_model(folder: Path, tokenizer, size: str = "tiny") -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    hidden, intermediate, layers, heads = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)


def build_size(folder: Path, size: str) -> None:
    """Write `builtin:<size>` (a key of SIZES) into `folder`: `tiny` trains its own tokenizer, the other sizes copy
    the tokenizer files of the built-in in TOKENIZER_OF, so models that share one can be compared token by token."""
    if size == "tiny":
        _build_model(folder, _build_tokenizer(folder))
        return
    from transformers import AutoTokenizer

    from lit_pref.models.artifacts import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(TOKENIZER_OF[size]))
    tokenizer.save_pretrained(folder)
    _build_model(folder, tokenizer, size)
