#!/usr/bin/env python3
"""Convert a Hugging Face gpt-oss checkpoint (MXFP4 experts) to a GGUF llama-server loads.

Made for the trained tiny agent of `tests/fixtures/gpt-oss-tiny-agent`, so its scenarios can
run through llama.cpp's `llama-server` (see `llama_server_scenarios.sh`), and small enough to
read whole: numpy and llama.cpp's own `gguf` package, no torch, no transformers.

What llama.cpp's gpt-oss loader wants, and how the HF layout differs:
- `ffn_gate_exps` and `ffn_up_exps` are two tensors; HF interleaves them in `gate_up_proj`
  (gate = even rows, up = odd rows; the bias likewise).
- MXFP4 blocks are ggml's `block_mxfp4`: the E8M0 scale byte, then 16 bytes where
  `qs[j] = code[j] | code[j + 16] << 4`. HF keeps the scales apart and packs element 2k in the
  low nibble of byte k, element 2k+1 in the high nibble.
- Every other tensor (bf16 in the checkpoint) is written as F32, which holds bf16 exactly.
Every expert tensor is checked after repacking: gguf-py's MXFP4 dequantizer must give the same
values as decoding the HF blocks directly.

Usage: PYTHONPATH=<llama.cpp>/gguf-py python3 tiny_agent_gguf.py [--model DIR] --out FILE
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

import gguf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_gguf import add_metadata, add_tokenizer_and_out_args, tensor_name  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MXFP4 = gguf.GGMLQuantizationType.MXFP4
# E2M1 code -> value (the OCP MX spec's FP4; codes 8..15 are the negatives).
FP4_VALUES = np.array(
    [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32
)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as numpy (bf16 widened to f32, exactly)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=base + start)
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            bits = raw.view(np.uint16).astype(np.uint32) << np.uint32(16)
            tensors[name] = bits.view(np.float32).reshape(shape)
        elif info["dtype"] == "F32":
            tensors[name] = raw.view(np.float32).reshape(shape)
        elif info["dtype"] == "U8":
            tensors[name] = raw.reshape(shape)
        else:
            raise ValueError(f"{path}: {name} has dtype {info['dtype']}, not BF16/F32/U8")
    return tensors


def hf_mxfp4_values(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF MXFP4 (`blocks` [..., n_blocks, 16], `scales` [..., n_blocks]) to f32 [..., n_blocks * 32]."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    scale = np.ldexp(np.float32(1), scales.astype(np.int32) - 127).astype(np.float32)
    values = FP4_VALUES[codes] * scale[..., None]
    return values.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def ggml_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """HF MXFP4 to ggml `block_mxfp4` bytes: [..., n_blocks * 17]."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    qs = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
    packed = np.concatenate([scales[..., None].astype(np.uint8), qs], axis=-1)
    return packed.reshape(*blocks.shape[:-2], blocks.shape[-2] * 17)


def check_repack(name: str, packed: np.ndarray, blocks: np.ndarray, scales: np.ndarray) -> None:
    want = hf_mxfp4_values(blocks, scales)
    got = gguf.quants.dequantize(packed, MXFP4).reshape(want.shape)
    if not np.array_equal(got, want):
        bad = int(np.sum(got != want))
        raise AssertionError(f"{name}: {bad} values differ after repacking to block_mxfp4")


def convert(model_dir: Path, tokenizer_json: Path, out: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") != "gpt_oss":
        raise ValueError(f"{model_dir}: model_type {cfg.get('model_type')!r}, expected 'gpt_oss'")
    hf = read_safetensors(model_dir / "model.safetensors")
    t = gguf.MODEL_TENSOR
    # (GGUF name, data, ggml type): F32 tensors as f32 arrays, MXFP4 as packed bytes.
    out_tensors: list[tuple[str, np.ndarray, gguf.GGMLQuantizationType | None]] = []

    def f32(name: str, hf_name: str) -> None:
        out_tensors.append((name, np.ascontiguousarray(hf.pop(hf_name), dtype=np.float32), None))

    def experts(name: str, blocks: np.ndarray, scales: np.ndarray) -> None:
        packed = ggml_mxfp4(blocks, scales)
        check_repack(name, packed, blocks, scales)
        out_tensors.append((name, np.ascontiguousarray(packed), MXFP4))

    f32(tensor_name(t.TOKEN_EMBD), "model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        f32(tensor_name(t.ATTN_NORM, i), p + "input_layernorm.weight")
        for kind, proj in [(t.ATTN_Q, "q"), (t.ATTN_K, "k"), (t.ATTN_V, "v"), (t.ATTN_OUT, "o")]:
            f32(tensor_name(kind, i), f"{p}self_attn.{proj}_proj.weight")
            f32(tensor_name(kind, i, "bias"), f"{p}self_attn.{proj}_proj.bias")
        f32(tensor_name(t.ATTN_SINKS, i), p + "self_attn.sinks")
        f32(tensor_name(t.ATTN_POST_NORM, i), p + "post_attention_layernorm.weight")
        f32(tensor_name(t.FFN_GATE_INP, i), p + "mlp.router.weight")
        f32(tensor_name(t.FFN_GATE_INP, i, "bias"), p + "mlp.router.bias")

        e = p + "mlp.experts."
        gate_up_blocks = hf.pop(e + "gate_up_proj_blocks")  # [experts, 2 * ff, n_blocks, 16]
        gate_up_scales = hf.pop(e + "gate_up_proj_scales")  # [experts, 2 * ff, n_blocks]
        gate_up_bias = hf.pop(e + "gate_up_proj_bias")  # [experts, 2 * ff]
        experts(tensor_name(t.FFN_GATE_EXP, i), gate_up_blocks[:, ::2], gate_up_scales[:, ::2])
        out_tensors.append(
            (tensor_name(t.FFN_GATE_EXP, i, "bias"), np.ascontiguousarray(gate_up_bias[:, ::2]), None)
        )
        experts(tensor_name(t.FFN_UP_EXP, i), gate_up_blocks[:, 1::2], gate_up_scales[:, 1::2])
        out_tensors.append(
            (tensor_name(t.FFN_UP_EXP, i, "bias"), np.ascontiguousarray(gate_up_bias[:, 1::2]), None)
        )
        experts(
            tensor_name(t.FFN_DOWN_EXP, i),
            hf.pop(e + "down_proj_blocks"),
            hf.pop(e + "down_proj_scales"),
        )
        f32(tensor_name(t.FFN_DOWN_EXP, i, "bias"), e + "down_proj_bias")
    f32(tensor_name(t.OUTPUT_NORM), "model.norm.weight")
    f32(tensor_name(t.OUTPUT), "lm_head.weight")
    if hf:
        raise ValueError(f"tensors not converted: {sorted(hf)}")

    tmp = out.with_name(out.name + ".partial")
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT_OSS])
    try:
        add_metadata(w, cfg, tokenizer_json, name=f"{model_dir.name} (ossa test fixture)")
        for name, data, qtype in out_tensors:
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    n_mxfp4 = sum(1 for _, _, q in out_tensors if q == MXFP4)
    print(
        f"wrote {out}: {len(out_tensors)} tensors ({n_mxfp4} MXFP4, "
        f"{len(out_tensors) - n_mxfp4} F32), {out.stat().st_size:,} bytes"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=REPO / "tests/fixtures/gpt-oss-tiny-agent",
        help="folder with config.json and model.safetensors",
    )
    add_tokenizer_and_out_args(ap)
    args = ap.parse_args()
    return convert(args.model, args.tokenizer, args.out)


if __name__ == "__main__":
    sys.exit(main())
