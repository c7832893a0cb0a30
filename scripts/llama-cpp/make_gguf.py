#!/usr/bin/env python3
"""Write a random-weight GGUF shaped like ggml-org's gpt-oss MXFP4 release.

The file has the tensor names, shapes and types llama.cpp's `gpt-oss` loader
expects (experts in MXFP4, attention / embedding / unembedding in Q8_0, small
tensors in F32) and a real o200k_harmony tokenizer, so `llama-bench` runs on it
exactly as on the released file. Speed does not depend on the weight values, so
the payload is random bytes; only the block scales are fixed up to small, finite
values so no kernel meets NaN/inf.

Shapes come from a Hugging Face gpt-oss `config.json`; the vocabulary from a
`tokenizer.json`. Needs numpy and llama.cpp's `gguf` Python package (put
`<llama.cpp>/gguf-py` on PYTHONPATH or `pip install gguf`). No torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gguf

MXFP4 = gguf.GGMLQuantizationType.MXFP4
Q8_0 = gguf.GGMLQuantizationType.Q8_0
F32 = gguf.GGMLQuantizationType.F32
ARCH = gguf.MODEL_ARCH.GPT_OSS
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Spec:
    """One tensor: its GGUF name, numpy-order shape in elements, and type."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    fill: str = "weight"  # for F32: "norm" (around 1), else small values

    def byte_shape(self) -> tuple[int, ...]:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        if self.shape[-1] % block:
            raise ValueError(f"{self.name}: row of {self.shape[-1]} not a multiple of {block}")
        return (*self.shape[:-1], self.shape[-1] // block * size)

    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape()))


def tensor_name(kind: gguf.MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    base = gguf.TENSOR_NAMES[kind]
    if layer is not None:
        base = base.format(bid=layer)
    return f"{base}.{suffix}"


def tensor_specs(cfg: dict) -> list[Spec]:
    """The 459 tensors of gpt-oss-20b (24 layers), in the llama.cpp loader's terms."""
    t = gguf.MODEL_TENSOR
    n_embd = cfg["hidden_size"]
    n_vocab = cfg["vocab_size"]
    n_head = cfg["num_attention_heads"]
    n_head_kv = cfg["num_key_value_heads"]
    head_dim = cfg["head_dim"]
    n_expert = cfg["num_local_experts"]
    n_ff = cfg["intermediate_size"]
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim

    specs = [Spec(tensor_name(t.TOKEN_EMBD), (n_vocab, n_embd), Q8_0)]
    for i in range(cfg["num_hidden_layers"]):
        specs += [
            Spec(tensor_name(t.ATTN_NORM, i), (n_embd,), F32, "norm"),
            Spec(tensor_name(t.ATTN_Q, i), (q_dim, n_embd), Q8_0),
            Spec(tensor_name(t.ATTN_Q, i, "bias"), (q_dim,), F32, "bias"),
            Spec(tensor_name(t.ATTN_K, i), (kv_dim, n_embd), Q8_0),
            Spec(tensor_name(t.ATTN_K, i, "bias"), (kv_dim,), F32, "bias"),
            Spec(tensor_name(t.ATTN_V, i), (kv_dim, n_embd), Q8_0),
            Spec(tensor_name(t.ATTN_V, i, "bias"), (kv_dim,), F32, "bias"),
            Spec(tensor_name(t.ATTN_OUT, i), (n_embd, q_dim), Q8_0),
            Spec(tensor_name(t.ATTN_OUT, i, "bias"), (n_embd,), F32, "bias"),
            Spec(tensor_name(t.ATTN_SINKS, i), (n_head,), F32, "bias"),
            Spec(tensor_name(t.ATTN_POST_NORM, i), (n_embd,), F32, "norm"),
            Spec(tensor_name(t.FFN_GATE_INP, i), (n_expert, n_embd), F32),
            Spec(tensor_name(t.FFN_GATE_INP, i, "bias"), (n_expert,), F32, "bias"),
            Spec(tensor_name(t.FFN_GATE_EXP, i), (n_expert, n_ff, n_embd), MXFP4),
            Spec(tensor_name(t.FFN_GATE_EXP, i, "bias"), (n_expert, n_ff), F32, "bias"),
            Spec(tensor_name(t.FFN_UP_EXP, i), (n_expert, n_ff, n_embd), MXFP4),
            Spec(tensor_name(t.FFN_UP_EXP, i, "bias"), (n_expert, n_ff), F32, "bias"),
            Spec(tensor_name(t.FFN_DOWN_EXP, i), (n_expert, n_embd, n_ff), MXFP4),
            Spec(tensor_name(t.FFN_DOWN_EXP, i, "bias"), (n_expert, n_embd), F32, "bias"),
        ]
    specs += [
        Spec(tensor_name(t.OUTPUT_NORM), (n_embd,), F32, "norm"),
        Spec(tensor_name(t.OUTPUT), (n_vocab, n_embd), Q8_0),
    ]
    return specs


def random_payload(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """Random bytes of the tensor's size with sane block scales (weights of std 0.02-0.03)."""
    if spec.qtype == F32:
        noise = rng.standard_normal(spec.shape, dtype=np.float32)
        if spec.fill == "norm":
            return (1.0 + 0.05 * noise).astype(np.float32)
        return (0.02 * noise).astype(np.float32)

    raw = rng.integers(0, 256, size=spec.byte_shape(), dtype=np.uint8)
    _, block_bytes = gguf.GGML_QUANT_SIZES[spec.qtype]
    blocks = raw.reshape(-1, block_bytes)
    if spec.qtype == MXFP4:
        # byte 0 of a block is an E8M0 exponent (2^(e-127)); 0xFF would be NaN.
        # 2^-8..2^-6 on random FP4 codes gives weights of std ~0.03.
        blocks[:, 0] = rng.integers(119, 122, size=blocks.shape[0], dtype=np.uint8)
    elif spec.qtype == Q8_0:
        # bytes 0..1 of a block are the f16 scale d; int8 codes have std ~74.
        d = rng.uniform(2.0e-4, 3.5e-4, size=blocks.shape[0]).astype(np.float16)
        blocks[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    else:
        raise ValueError(f"{spec.name}: unexpected type {spec.qtype.name}")
    return raw


def load_vocab(tokenizer_json: Path, n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges the way llama.cpp's `gpt2` BPE vocab wants them."""
    tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = tok["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_json}: model type {model.get('type')!r}, expected BPE")
    by_id: dict[int, tuple[str, int]] = {}
    for text, idx in model["vocab"].items():
        by_id[idx] = (text, gguf.TokenType.NORMAL)
    for added in tok.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)

    tokens, types = [], []
    for i in range(n_vocab):  # ids past the embedding (e.g. 201088) have no row: dropped
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def token_id(tokens: list[str], text: str) -> int:
    try:
        return tokens.index(text)
    except ValueError:
        raise ValueError(f"tokenizer has no {text!r} token") from None


def add_metadata(
    w: gguf.GGUFWriter,
    cfg: dict,
    tokenizer_json: Path,
    name: str = "gpt-oss-20b (random weights, ossa benchmark)",
) -> None:
    """The hyperparameters and vocabulary llama.cpp's gpt-oss loader reads (also used by
    `tiny_agent_gguf.py`)."""
    rope = cfg.get("rope_scaling") or {}
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_MXFP4_MOE)

    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_expert_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_expert_count(cfg["num_local_experts"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    w.add_sliding_window(cfg["sliding_window"])
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    if rope.get("rope_type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
        w.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))

    tokens, types, merges = load_vocab(tokenizer_json, cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-4o")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(token_id(tokens, "<|startoftext|>"))
    w.add_eos_token_id(token_id(tokens, "<|return|>"))
    w.add_pad_token_id(cfg.get("pad_token_id", token_id(tokens, "<|endoftext|>")))


def add_tokenizer_and_out_args(ap: argparse.ArgumentParser) -> None:
    """The options every GGUF writer here takes (also used by `tiny_agent_gguf.py`): the
    vocabulary to embed and the file to write."""
    ap.add_argument(
        "--tokenizer",
        type=Path,
        default=REPO / "tests/fixtures/tokenizer/tokenizer.json",
        help="HF tokenizer.json of the o200k_harmony vocabulary",
    )
    ap.add_argument("--out", type=Path, required=True, help="GGUF file to write")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="HF gpt-oss config.json")
    add_tokenizer_and_out_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    args = ap.parse_args()

    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    if cfg.get("model_type") != "gpt_oss":
        print(f"{args.config}: model_type {cfg.get('model_type')!r}, expected 'gpt_oss'", file=sys.stderr)
        return 2
    specs = tensor_specs(cfg)
    counts = {q: sum(1 for s in specs if s.qtype == q) for q in (MXFP4, Q8_0, F32)}
    data_bytes = sum(s.nbytes() for s in specs)
    print(
        f"{len(specs)} tensors ({counts[MXFP4]} MXFP4, {counts[Q8_0]} Q8_0, {counts[F32]} F32), "
        f"{data_bytes:,} bytes of tensor data"
    )
    if args.dry_run:
        return 0

    tmp = args.out.with_name(args.out.name + ".partial")
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[ARCH])
    try:
        add_metadata(w, cfg, args.tokenizer)
        for s in specs:
            dtype = np.float32 if s.qtype == F32 else np.uint8
            shape = s.shape if s.qtype == F32 else s.byte_shape()
            w.add_tensor_info(s.name, shape, np.dtype(dtype), s.nbytes(), raw_dtype=None if s.qtype == F32 else s.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(args.seed)
        start, done = time.monotonic(), 0
        for s in specs:
            w.write_tensor_data(random_payload(s, rng))
            done += s.nbytes()
            if s.nbytes() > 10_000_000:
                rate = done / max(time.monotonic() - start, 1e-9) / 1e6
                print(f"\r{done / 1e9:6.2f} / {data_bytes / 1e9:.2f} GB  ({rate:.0f} MB/s)", end="", flush=True)
        print()
        w.close()
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {args.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
