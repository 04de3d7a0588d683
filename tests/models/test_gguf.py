"""`forgetless convert`: a GGUF file becomes a Hugging Face checkpoint with the same weights and
tokenizer. The GGUF file is written here, by the gguf package's own writer, from a tiny Llama
whose weights are the reference; llama.cpp's layout (its q/k row order for rotary embeddings, its
tensor names) is applied by hand, so the conversion is checked against the model it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from forgetless.errors import BadValue, CorruptCheckpoint, NoCheckpoint, UserError  # noqa: E402
from forgetless.models import build_model, convert_gguf, load_model, resolve_checkpoint  # noqa: E402

TEXT = ["def add(a, b):\n    return a + b\n", "The cat sat on the mat.", "for i in range(10): print(i)"] * 20


def _tokenizer():
    """A byte-level BPE of 300 tokens, trained here (GGUF's "gpt2" tokenizer model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def _llama_cpp_qk(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q and k with each head's rotary halves interleaved (convert_hf_to_gguf's
    permute); transformers undoes it when it reads the file."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(model, tokenizer, path, quant=None) -> dict[str, np.ndarray]:
    """The model as llama.cpp writes it; returns the arrays written (dequantised, where quantised)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    written = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            target = f"blk.{i}.{per_layer[rest.rsplit('.', 1)[0]]}.weight"
        else:
            target = names[name]
        arr = tensor.numpy().astype(np.float32)
        if is_qk := name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            arr = _llama_cpp_qk(arr, heads)
        if quant is not None and arr.ndim == 2:
            q = gguf.quants.quantize(arr, quant)
            w.add_tensor(target, q, raw_shape=q.shape, raw_dtype=quant)
            arr = gguf.quants.dequantize(q, quant)
        else:
            w.add_tensor(target, arr)
        if is_qk:  # back to transformers' row order, the reference for the converted model
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            arr = arr.reshape(heads, arr.shape[0] // heads // 2, 2, *arr.shape[1:]).swapaxes(1, 2).reshape(arr.shape)
        written[name] = arr
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    model = build_model("nano", len(tokenizer), num_hidden_layers=2, tie_word_embeddings=False,
                        num_key_value_heads=2)
    return model.eval(), tokenizer, tmp_path_factory.mktemp("gguf")


def test_convert_keeps_every_weight_and_the_tokenizer(tiny):
    model, tokenizer, root = tiny
    _write_gguf(model, tokenizer, root / "tiny-f32.gguf")
    out = convert_gguf(root / "tiny-f32.gguf", root / "f32-hf")
    converted, tok = load_model(out)
    reference = model.state_dict()
    for name, tensor in converted.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    text = "def add(a, b): return the cat"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, model(ids).logits)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # an ordinary checkpoint: finetuned and saved as any
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))


def test_a_quantised_file_gives_the_dequantised_weights(tiny):
    """Q8_0 blocks: the converted weights are what the gguf package's own dequantiser makes of
    the file, and within Q8_0's step of the original."""
    model, tokenizer, root = tiny
    written = _write_gguf(model, tokenizer, root / "tiny-q8.gguf", quant=gguf.GGMLQuantizationType.Q8_0)
    converted, _ = load_model(convert_gguf(root / "tiny-q8.gguf", root / "q8-hf"))
    state = converted.state_dict()
    for name, arr in written.items():
        torch.testing.assert_close(state[name], torch.from_numpy(np.ascontiguousarray(arr)), rtol=0, atol=1e-7, msg=name)
    w = model.state_dict()["model.layers.0.mlp.up_proj.weight"]
    step = w.abs().max() / 127
    assert 0 < (state["model.layers.0.mlp.up_proj.weight"] - w).abs().max() <= step


def test_bad_inputs_name_the_fix(tiny, tmp_path):
    model, tokenizer, root = tiny
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(CorruptCheckpoint, match="not a GGUF file"):
        convert_gguf(not_gguf, tmp_path / "out")
    with pytest.raises(NoCheckpoint, match="no such GGUF file"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    _write_gguf(model, tokenizer, tmp_path / "tiny.gguf")
    with pytest.raises(UserError, match="not empty"):
        convert_gguf(tmp_path / "tiny.gguf", busy)
    with pytest.raises(BadValue, match="--dtype: dtype 'fp8' is unknown; allowed: float32, bfloat16, float16"):
        convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out-fp8", dtype="fp8")
    assert not (tmp_path / "out-fp8").exists()
    # every other command is told to convert first, with the command to paste
    with pytest.raises(NoCheckpoint, match="forgetless convert .*tiny.gguf --out"):
        resolve_checkpoint(tmp_path / "tiny.gguf")
