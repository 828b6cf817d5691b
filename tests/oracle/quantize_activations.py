#!/usr/bin/env python3
"""Activation-quantization oracle for ghostcore's quant tests (numpy, float32 arithmetic).

Usage: quantize_activations.py IN.f32 OUT_DIR

IN.f32 holds little-endian f32 values (a multiple of 256). Writes OUT_DIR/q8_0.bin,
q8_1.bin and q8_k.bin, following llama.cpp's x86 CPU backend:
- Q8_0 / Q8_1 (ggml-cpu/arch/x86/quants.c, AVX path): d = amax / 127, id = 127 / amax
  (0 when amax is 0), q = round-half-to-even(x * id); Q8_1 also s = f16(d * sum(q)).
- Q8_K (quantize_row_q8_K_ref): max = the first element of largest magnitude (signed),
  iscale = -127 / max, q = min(127, round-half-to-even(iscale * x)), d = 1 / iscale,
  bsums = sums of 16 consecutive q; an all-zero block is all zeros.
"""

import sys

import numpy as np

F32 = np.float32


def q8_symmetric(block: np.ndarray):
    amax = np.max(np.abs(block)).astype(F32)
    d = F32(amax / F32(127))
    inv = F32(F32(127) / amax) if amax != 0 else F32(0)
    q = np.rint(block * inv).astype(np.int32)
    return d, np.clip(q, -128, 127).astype(np.int8)


def main() -> int:
    x = np.fromfile(sys.argv[1], dtype="<f4").astype(F32)
    out = sys.argv[2]
    q8_0, q8_1, q8_k = bytearray(), bytearray(), bytearray()
    for b in range(len(x) // 32):
        d, q = q8_symmetric(x[32 * b : 32 * b + 32])
        q8_0 += np.float16(d).astype("<f2").tobytes() + q.tobytes()
        s = F32(d * F32(int(q.astype(np.int32).sum())))
        q8_1 += np.float16(d).astype("<f2").tobytes() + np.float16(s).astype("<f2").tobytes() + q.tobytes()
    for b in range(len(x) // 256):
        blk = x[256 * b : 256 * b + 256]
        i = int(np.argmax(np.abs(blk)))
        mx = blk[i]
        if mx == 0:
            q8_k += bytes(292)
            continue
        iscale = F32(F32(-127) / mx)
        q = np.minimum(np.rint(iscale * blk).astype(np.int32), 127).astype(np.int8)
        d = F32(F32(1) / iscale)
        bsums = q.astype(np.int32).reshape(16, 16).sum(axis=1).astype("<i2")
        q8_k += np.array([d], dtype="<f4").tobytes() + q.tobytes() + bsums.tobytes()
    for name, data in (("q8_0", q8_0), ("q8_1", q8_1), ("q8_k", q8_k)):
        with open(f"{out}/{name}.bin", "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
