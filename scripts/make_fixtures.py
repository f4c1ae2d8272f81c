#!/usr/bin/env python3
"""Generate the golden reference fixtures under fixtures/ (Python reference side only).

The Rust tests read the files this script writes; they never run Python.

    .venv/bin/python scripts/make_fixtures.py [--data PATH] [--out fixtures]

Deterministic: every random draw is seeded, so re-running with the same library
versions rewrites byte-identical files (check with `git status` / `sha256sum`).

What it writes (see fixtures/README.md for the schemas):
  fixtures/tokenizer.json                      tiny byte-level BPE, vocab 512
  fixtures/tokenizer_cases.json                encode/decode references
  fixtures/tiny-qwen2/   Qwen2ForCausalLM  f32, single file, tied, config in transformers-4 layout
  fixtures/tiny-llama/   LlamaForCausalLM  bf16, 2 shards + index, llama3 rope scaling, v4 layout
  fixtures/tiny-qwen3/   Qwen3ForCausalLM  f16, single file, tied, config in transformers-5 layout,
                                           chat template in chat_template.jinja
  fixtures/<model>/reference.json              logits / logprobs / greedy references
  fixtures/chat_templates/renderings.json      apply_chat_template references
(The three real chat templates in fixtures/chat_templates/*.jinja are committed inputs,
 not generated; see fixtures/chat_templates/SOURCES.md.)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import tokenizers
import transformers
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

REPO = Path(__file__).resolve().parent.parent
SEED = 20240607

VOCAB_SIZE = 512
# Special / added tokens, appended after the BPE vocabulary (ids 507..511), the way
# Qwen2 puts its added tokens after the byte-level BPE vocabulary.
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # special=True
THINK = ["<think>", "</think>"]  # added, special=False (as in Qwen3 / R1-distill)
N_ADDED = len(SPECIAL) + len(THINK)
BPE_SIZE = VOCAB_SIZE - N_ADDED  # 507 = 256 byte symbols + 251 merges

# Qwen2's pre-tokenizer split regex (tokenizer.json of Qwen2/Qwen2.5/Qwen3).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

INIT_STD = 0.15  # large enough that logits are O(1), see init_params()

GREEDY_SETTINGS = {
    "do_sample": False,
    "max_new_tokens": 20,
    "min_new_tokens": 20,
    "eos_token_id": None,
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "use_cache": True,
    "note": "HF model.generate with a fresh GenerationConfig (model defaults from "
    "generation_config.json NOT applied) and eos_token_id=None, so it never stops early and "
    "no EOS suppression is applied: the new tokens are the plain argmax chain. Cross-checked "
    "against a manual no-cache argmax loop.",
}


# ----------------------------------------------------------------------------- helpers

def dump_json(path: Path, obj, indent=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def round_list(t: torch.Tensor, nd: int = 6):
    return [round(float(x), nd) for x in t.reshape(-1).tolist()]


def load_texts(path: Path, n_lines: int):
    texts = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n_lines:
                break
            rec = json.loads(line)
            texts.append(rec["problem"])
            if rec.get("solution"):
                texts.append(rec["solution"])
    return texts


# ----------------------------------------------------------------------------- tokenizer

def build_tokenizer(texts) -> Tokenizer:
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.get_vocab_size() == BPE_SIZE, tok.get_vocab_size()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False) for t in SPECIAL]
    )
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False) for t in THINK]
    )
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    for i, t in enumerate(SPECIAL + THINK):
        assert tok.token_to_id(t) == BPE_SIZE + i
    # The Python API does not expose the ByteLevel *decoder* flags; write them the way
    # Qwen2's tokenizer.json has them (they do not change decoding).
    j = json.loads(tok.to_str())
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def save_tokenizer(tok: Tokenizer, path: Path, legacy_merges: bool):
    """Save tokenizer.json. legacy_merges=True writes merges as "a b" strings (the form in the
    real Qwen2.5 / Llama-3 tokenizer.json files); False keeps the [["a","b"], ...] pair form that
    tokenizers >= 0.20 writes. Both load to the same tokenizer."""
    j = json.loads(tok.to_str())
    if legacy_merges:
        merges = j["model"]["merges"]
        assert all(" " not in a and " " not in b for a, b in merges)
        j["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    text = json.dumps(j, ensure_ascii=False, indent=2) + "\n"
    again = Tokenizer.from_str(text)
    assert again.get_vocab() == tok.get_vocab()
    probe = "Natalia sold 48/2 = <<48/2=24>>24 clips. 小明 😀 <think>x</think><|im_end|>"
    assert again.encode(probe).ids == tok.encode(probe).ids
    path.write_text(text, encoding="utf-8")


def llama_style_tokenizer(base: Tokenizer) -> Tokenizer:
    """Same vocab, plus a Llama-3 style post-processor that prepends BOS (<|endoftext|>)."""
    tok = Tokenizer.from_str(base.to_str())
    bos = "<|endoftext|>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, tok.token_to_id(bos))],
            ),
        ]
    )
    return tok


def added_tokens_decoder(tok: Tokenizer):
    out = {}
    for t in SPECIAL + THINK:
        out[str(tok.token_to_id(t))] = {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL,
        }
    return out


def tokenizer_cases(tok: Tokenizer):
    strings = [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
        "Weng earns $12 an hour. 12/60 = $0.2 per minute; 0.2 x 50 = $10.",
        "$\\frac{1}{2} + \\sqrt{x^2+1} = \\boxed{42}$ and \\(a_n = 3n - 1\\)",
        "小明有5个苹果，吃了2个，还剩几个？答：3个。",
        "I love math 😀🎉! café naïve",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nEasy.\n</think>\n\n4<|im_end|><|endoftext|>",
        "   leading spaces,\ttabs\n\n\nand newlines   ",
        "don't I'LL we've THEY'RE",
        "",
    ]
    cases = []
    for s in strings:
        enc = tok.encode(s, add_special_tokens=False)
        ids = list(enc.ids)
        cases.append(
            {
                "text": s,
                "ids": ids,
                "tokens": list(enc.tokens),
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    return cases


# ----------------------------------------------------------------------------- models

def init_params(model: torch.nn.Module, seed: int):
    """Re-initialise every parameter from a seeded generator (order = sorted names).

    Matrices ~ N(0, INIT_STD^2); RMSNorm weights ~ 1 + N(0, 0.2^2) (so norm-weight loading is
    actually tested); biases ~ N(0, 0.1^2) (Qwen2 q/k/v biases would otherwise be 0).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = p.shape
            if name.endswith("norm.weight"):
                v = 1.0 + 0.2 * torch.randn(shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(shape, generator=g)
            else:
                v = INIT_STD * torch.randn(shape, generator=g)
            p.copy_(v.to(p.dtype))


def state_for_saving(model, tied: bool, dtype: torch.dtype):
    sd = {}
    for k, v in model.state_dict().items():
        if tied and k == "lm_head.weight":
            continue  # HF omits the tied head from the checkpoint
        sd[k] = v.detach().to(dtype).contiguous().clone()
    return sd


def save_single(sd, out_dir: Path):
    save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def save_two_shards(sd, out_dir: Path):
    names = sorted(sd)
    first = [n for n in names if n.startswith("model.embed_tokens.") or n.startswith("model.layers.0.")]
    second = [n for n in names if n not in first]
    files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    total = 0
    for fname, group in zip(files, [first, second]):
        save_file({n: sd[n] for n in group}, str(out_dir / fname), metadata={"format": "pt"})
        for n in group:
            weight_map[n] = fname
            total += sd[n].numel() * sd[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    dump_json(out_dir / "model.safetensors.index.json", index, indent=2)


def v4_config_qwen2(tv: str):
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 507,
        "eos_token_id": 509,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": INIT_STD,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": 256,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": tv,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 512,
    }


def v4_config_llama(tv: str):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 507,
        "eos_token_id": [509, 507],
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": INIT_STD,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 64,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": tv,
        "use_cache": True,
        "vocab_size": 512,
    }


def qwen3_config_obj():
    return Qwen3Config(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
        tie_word_embeddings=True,
        initializer_range=INIT_STD,
        attention_bias=False,
        bos_token_id=507,
        eos_token_id=509,
        max_window_layers=2,
        use_sliding_window=False,
        sliding_window=None,
    )


def v5_config_qwen3(tv: str):
    cfg = qwen3_config_obj().to_diff_dict()  # what save_pretrained writes (no generic defaults)
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg["dtype"] = "float16"
    cfg["transformers_version"] = tv
    cfg.pop("torch_dtype", None)
    assert "rope_theta" not in cfg and cfg["rope_parameters"] == {"rope_theta": 1000000.0, "rope_type": "default"}
    return dict(sorted(cfg.items()))


MODELS = {
    "tiny-qwen2": {
        "config": v4_config_qwen2,
        "config_obj": lambda: Qwen2Config(**{k: v for k, v in v4_config_qwen2("x").items()
                                             if k not in ("architectures", "torch_dtype", "transformers_version")}),
        "dtype": torch.float32,
        "tied": True,
        "sharded": False,
        "seed_offset": 1,
        "expect_rope": {"rope_theta": 10000.0, "rope_type": "default"},
        "chat": "qwen2.5",
        "chat_in_config": True,
        "tokenizer_config": {
            "add_bos_token": False,
            "add_prefix_space": False,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 256,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
        # Qwen2.5-Instruct style generation defaults (mapped to the tiny vocab).
        "generation_config": {
            "bos_token_id": 507,
            "do_sample": True,
            "eos_token_id": [509, 507],
            "pad_token_id": 507,
            "repetition_penalty": 1.05,
            "temperature": 0.7,
            "top_k": 20,
            "top_p": 0.8,
        },
    },
    "tiny-llama": {
        "config": v4_config_llama,
        "config_obj": None,
        "dtype": torch.bfloat16,
        "tied": False,
        "sharded": True,
        "seed_offset": 2,
        "expect_rope": {
            "rope_theta": 500000.0,
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "chat": "llama3",
        "chat_in_config": True,
        "tokenizer_config": {
            "bos_token": "<|endoftext|>",
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|im_end|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 256,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
        # Llama-3-Instruct style generation defaults (mapped to the tiny vocab).
        "generation_config": {
            "bos_token_id": 507,
            "do_sample": True,
            "eos_token_id": [509, 507],
            "temperature": 0.6,
            "top_p": 0.9,
        },
    },
    "tiny-qwen3": {
        "config": v5_config_qwen3,
        "config_obj": qwen3_config_obj,
        "dtype": torch.float16,
        "tied": True,
        "sharded": False,
        "seed_offset": 3,
        "expect_rope": {"rope_theta": 1000000.0, "rope_type": "default"},
        "chat": "qwen2.5",
        "chat_in_config": False,  # written to chat_template.jinja instead
        "tokenizer_config": {
            "add_bos_token": False,
            "add_prefix_space": False,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 256,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
        # Qwen3 style generation defaults (mapped to the tiny vocab).
        "generation_config": {
            "bos_token_id": 507,
            "do_sample": True,
            "eos_token_id": [509, 507],
            "pad_token_id": 507,
            "temperature": 0.6,
            "top_k": 20,
            "top_p": 0.95,
        },
    },
}


def reference_inputs(tok: Tokenizer):
    """Two full-length sequences (12 and 7 tokens) and two greedy prompts (5 and 9 tokens)."""
    a = tok.encode(
        "<|im_start|>user\nNatalia sold 48 clips in April and half as many in May.",
        add_special_tokens=False,
    ).ids[:12]
    b = tok.encode("<think>\nWeng earns $12 an hour", add_special_tokens=False).ids[:7]
    assert len(a) == 12 and len(b) == 7, (len(a), len(b))
    p1 = tok.encode("How many clips?", add_special_tokens=False).ids[:5]
    p2 = tok.encode("<|im_start|>assistant\n<think>\nShe sold 48/2 = 24", add_special_tokens=False).ids[:9]
    assert len(p1) == 5 and len(p2) == 9, (len(p1), len(p2))
    return [a, b], [p1, p2]


def manual_greedy(model, prompt, n):
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1]
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            ids.append(nxt)
    return out


def build_model(name: str, spec: dict, base_tok: Tokenizer, out_root: Path, templates: dict):
    tv = transformers.__version__
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # 1. config.json exactly as we want it on disk, then a model built from it.
    cfg_dict = spec["config"](tv)
    dump_json(out / "config.json", cfg_dict, indent=2)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(out)  # also proves transformers parses our layout
    torch.manual_seed(SEED + spec["seed_offset"])
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    init_params(model, SEED + spec["seed_offset"])
    if spec["tied"]:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    # 2. weights
    sd = state_for_saving(model, spec["tied"], spec["dtype"])
    if spec["sharded"]:
        save_two_shards(sd, out)
    else:
        save_single(sd, out)

    # 3. tokenizer files
    tok = llama_style_tokenizer(base_tok) if name == "tiny-llama" else Tokenizer.from_str(base_tok.to_str())
    # tiny-qwen2: legacy "a b" merges (like real Qwen2.5); tiny-llama / tiny-qwen3: pair form.
    save_tokenizer(tok, out / "tokenizer.json", legacy_merges=(name == "tiny-qwen2"))
    tcfg = dict(spec["tokenizer_config"])
    tcfg["added_tokens_decoder"] = added_tokens_decoder(tok)
    if spec["chat_in_config"]:
        tcfg["chat_template"] = templates[spec["chat"]]
    else:
        (out / "chat_template.jinja").write_text(templates[spec["chat"]], encoding="utf-8")
    dump_json(out / "tokenizer_config.json", dict(sorted(tcfg.items())), indent=2)
    gcfg = dict(spec["generation_config"])
    gcfg["transformers_version"] = tv
    dump_json(out / "generation_config.json", dict(sorted(gcfg.items())), indent=2)

    # 4. reload from disk exactly like a user would, upcast to f32 for the reference
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    loaded.eval()
    rp = dict(loaded.config.rope_parameters)
    for k, v in spec["expect_rope"].items():
        assert rp.get(k) == v, (name, k, rp)
    lsd = loaded.state_dict()
    for k, v in sd.items():
        assert torch.equal(lsd[k], v.to(torch.float32)), (name, k)
    if spec["tied"]:
        assert torch.equal(lsd["lm_head.weight"], lsd["model.embed_tokens.weight"])
    else:
        assert not torch.equal(lsd["lm_head.weight"], lsd["model.embed_tokens.weight"])
    if name == "tiny-qwen3":
        assert "model.layers.0.self_attn.q_norm.weight" in lsd
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.chat_template == templates[spec["chat"]], name
    assert len(hf_tok) == VOCAB_SIZE, len(hf_tok)

    # 5. references
    seqs, prompts = reference_inputs(base_tok)
    logits_out, logprobs_out = [], []
    with torch.no_grad():
        for s in seqs:
            lg = loaded(torch.tensor([s])).logits[0].float()  # [L, V]
            lp = torch.log_softmax(lg, dim=-1)
            tgt = torch.tensor(s[1:])
            seq_lp = lp[:-1].gather(1, tgt[:, None])[:, 0]
            logits_out.append([round_list(row) for row in lg])
            logprobs_out.append(round_list(seq_lp))
    std = float(torch.tensor([x for seq in logits_out for row in seq for x in row]).std())
    assert std > 0.5, f"{name}: logits too flat (std {std})"

    gen_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gen_model.generation_config = GenerationConfig()  # do not inherit sampling defaults
    gcases = []
    for p in prompts:
        gc = GenerationConfig(
            do_sample=False,
            max_new_tokens=20,
            min_new_tokens=20,
            num_beams=1,
            eos_token_id=None,
            pad_token_id=507,
            use_cache=True,
        )
        with torch.no_grad():
            res = gen_model.generate(
                torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), generation_config=gc
            )
        new = res[0, len(p):].tolist()
        assert len(new) == 20
        assert new == manual_greedy(gen_model, p, 20), (name, "generate != manual argmax")
        gcases.append({"prompt": p, "new_tokens": new})

    ref = {
        "model": name,
        "dtype": "float32",
        "weights_dtype": {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[spec["dtype"]],
        "note": "logits computed in float32 after upcasting the stored weights to float32; "
        "each sequence run on its own (batch of 1, no padding, positions from 0); "
        "values rounded to 6 decimals",
        "input_ids": seqs,
        "logits": logits_out,
        "logprobs": logprobs_out,
        "greedy": {"settings": GREEDY_SETTINGS, "cases": gcases},
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
    }
    dump_json(out / "reference.json", ref)
    print(f"  {name}: logits std {std:.3f}; greedy {[c['new_tokens'][:6] for c in gcases]}")


# ----------------------------------------------------------------------------- chat templates

TEMPLATE_TOKENS = {
    "qwen2.5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "deepseek-r1-distill": {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
}

THINK_ANSWER = "<think>\nNatalia sold 48/2 = 24 clips in May, so 48 + 24 = 72.\n</think>\n\nShe sold 72 clips."

CHAT_CASES = [
    ("system+user", [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "What is 17 * 3?"},
    ], True),
    ("user-only-gen", [
        {"role": "user", "content": "What is 17 * 3?"},
    ], True),
    ("user-only-nogen", [
        {"role": "user", "content": "What is 17 * 3?"},
    ], False),
    ("multi-turn-gen", [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 5?"},
    ], True),
    ("multi-turn-ends-assistant", [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
    ], False),
    ("assistant-think", [
        {"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. How many in total?"},
        {"role": "assistant", "content": THINK_ANSWER},
        {"role": "user", "content": "Thanks! Now double it."},
    ], True),
    ("chinese", [
        {"role": "system", "content": "你是一个数学助手。"},
        {"role": "user", "content": "小明有5个苹果，吃了2个，还剩几个？"},
        {"role": "assistant", "content": "还剩3个。"},
    ], False),
    ("whitespace", [
        {"role": "user", "content": "  What is 1+1?  \n"},
        {"role": "assistant", "content": "\n2\n"},
        {"role": "user", "content": "ok"},
    ], True),
]


def renderings(base_tok: Tokenizer, templates: dict):
    out = []
    for tname in ["qwen2.5", "llama3", "deepseek-r1-distill"]:
        toks = TEMPLATE_TOKENS[tname]
        hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(base_tok.to_str()))
        hf.chat_template = templates[tname]
        # set bos/eos as the real checkpoint does (strings only; rendering never tokenizes)
        hf.bos_token = toks["bos_token"]
        hf.eos_token = toks["eos_token"]
        for case_name, messages, agp in CHAT_CASES:
            text = hf.apply_chat_template(copy.deepcopy(messages), tokenize=False, add_generation_prompt=agp)
            out.append(
                {
                    "template": tname,
                    "case": case_name,
                    "messages": messages,
                    "add_generation_prompt": agp,
                    "bos_token": toks["bos_token"],
                    "eos_token": toks["eos_token"],
                    "expected": text,
                }
            )
    return out


def sanity_check_templates(templates: dict, rend):
    """Guard against a corrupted template file: known renderings of the real templates."""
    by = {(r["template"], r["case"]): r["expected"] for r in rend}
    assert by[("qwen2.5", "user-only-gen")] == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 17 * 3?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert by[("llama3", "system+user")] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful math tutor.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 17 * 3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert by[("deepseek-r1-distill", "system+user")] == (
        "<｜begin▁of▁sentence｜>You are a careful math tutor.<｜User｜>What is 17 * 3?<｜Assistant｜><think>\n"
    )
    assert "<think>" not in by[("deepseek-r1-distill", "assistant-think")].split("<｜Assistant｜>")[1]


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="gsm8k_train.jsonl (default: shared/data or /work/shared/data)")
    ap.add_argument("--out", default=str(REPO / "fixtures"))
    ap.add_argument("--lines", type=int, default=2000, help="first N lines of the data used for BPE training")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    data = args.data
    if data is None:
        for cand in [REPO / "shared/data/gsm8k_train.jsonl", REPO.parent / "shared/data/gsm8k_train.jsonl",
                     Path("/work/shared/data/gsm8k_train.jsonl")]:
            if cand.exists():
                data = cand
                break
    if data is None:
        sys.exit("gsm8k_train.jsonl not found; pass --data")
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)

    tdir = out_root / "chat_templates"
    templates = {
        n: (tdir / f"{n}.jinja").read_text(encoding="utf-8") for n in ["qwen2.5", "llama3", "deepseek-r1-distill"]
    }

    print(f"torch {torch.__version__}  transformers {transformers.__version__}  tokenizers {tokenizers.__version__}")
    print(f"training BPE on first {args.lines} lines of {data}")
    texts = load_texts(Path(data), args.lines)
    tok = build_tokenizer(texts)
    save_tokenizer(tok, out_root / "tokenizer.json", legacy_merges=True)  # == tiny-qwen2/tokenizer.json
    dump_json(out_root / "tokenizer_cases.json", {
        "tokenizer": "fixtures/tiny-qwen2/tokenizer.json (identical to fixtures/tokenizer.json)",
        "call": "tokenizers.Tokenizer.encode(text, add_special_tokens=False); decode(ids, skip_special_tokens=False|True)",
        "tokenizers_version": tokenizers.__version__,
        "cases": tokenizer_cases(tok),
    }, indent=1)

    for name, spec in MODELS.items():
        build_model(name, spec, tok, out_root, templates)

    rend = renderings(tok, templates)
    sanity_check_templates(templates, rend)
    # A plain list of cases (renderer + versions are documented in fixtures/README.md).
    dump_json(tdir / "renderings.json", rend, indent=1)
    print(f"wrote {len(rend)} chat renderings")


if __name__ == "__main__":
    main()
