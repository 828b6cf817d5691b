#!/usr/bin/env python3
"""Write a synthetic Llama-shaped GGUF with random Q4_K weights, for decode-speed tests of the
sparse FFN at scale (quality is meaningless on random weights; only bytes and speed matter).

Default shape: Llama-3-8B per layer (n_embd 4096, n_ff 14336, 32 heads, 8 KV heads, vocab
128256, untied output) with 8 of its 32 layers, so the file (~1.4 GB) fits this machine; the
FFN is ~62% of the bytes read per token (8B: ~2/3).

usage: make_synth_llama.py OUT.gguf [--layers N] [--embd N] [--ff N] [--vocab N]
"""
import argparse

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

QK_K = 256
Q4K_BYTES = 144


def q4k_random(rows, cols, rng):
    assert cols % QK_K == 0
    nb = rows * cols // QK_K
    blocks = rng.integers(0, 256, size=(nb, Q4K_BYTES), dtype=np.uint8)
    # d and dmin: small positive f16 (random bytes could be NaN/inf).
    d = np.full(nb, 0.0015, dtype=np.float16).view(np.uint8).reshape(nb, 2)
    dmin = np.full(nb, 0.0008, dtype=np.float16).view(np.uint8).reshape(nb, 2)
    blocks[:, 0:2] = d
    blocks[:, 2:4] = dmin
    # gguf-py wants the byte shape (rows, cols/256*144) for quantized tensors.
    return blocks.reshape(rows, cols // QK_K * Q4K_BYTES)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--embd", type=int, default=4096)
    ap.add_argument("--ff", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=128256)
    a = ap.parse_args()
    rng = np.random.default_rng(1234)
    head_dim = a.embd // a.heads
    w = GGUFWriter(a.out, "llama")
    w.add_name("synthetic-llama")
    w.add_context_length(8192)
    w.add_embedding_length(a.embd)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(a.vocab)
    Q4K = GGMLQuantizationType.Q4_K

    def q(name, rows, cols):
        w.add_tensor(name, q4k_random(rows, cols, rng), raw_dtype=Q4K)

    def norm(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    q("token_embd.weight", a.vocab, a.embd)
    for i in range(a.layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", a.embd)
        q(p + "attn_q.weight", a.embd, a.embd)
        q(p + "attn_k.weight", a.kv_heads * head_dim, a.embd)
        q(p + "attn_v.weight", a.kv_heads * head_dim, a.embd)
        q(p + "attn_output.weight", a.embd, a.embd)
        norm(p + "ffn_norm.weight", a.embd)
        q(p + "ffn_gate.weight", a.ff, a.embd)
        q(p + "ffn_up.weight", a.ff, a.embd)
        q(p + "ffn_down.weight", a.embd, a.ff)
    norm("output_norm.weight", a.embd)
    q("output.weight", a.vocab, a.embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
