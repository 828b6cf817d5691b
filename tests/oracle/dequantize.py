#!/usr/bin/env python3
"""Dequantization oracle for ghostcore's quant tests.

Usage: dequantize.py IN.gguf OUT.bin

Reads every tensor of IN.gguf with gguf-py's GGUFReader and dequantizes it with
gguf.quants.dequantize (llama.cpp's own Python package). Writes, in file order, for each
tensor: u32 name length, the UTF-8 name, u64 element count, then the values as
little-endian f32. Q8_K (which gguf-py cannot dequantize) is computed here as d * q
straight from its block layout (f32 d, 256 x i8 q, 16 x i16 sums).
"""

import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize


def dequantize_q8_k(raw: np.ndarray) -> np.ndarray:
    blocks = np.ascontiguousarray(raw).view(np.uint8).reshape(-1, 292)
    d = blocks[:, :4].copy().view("<f4").astype(np.float32)
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def main() -> int:
    src, dst = sys.argv[1], sys.argv[2]
    reader = GGUFReader(src)
    with open(dst, "wb") as out:
        for t in reader.tensors:
            if t.tensor_type == GGMLQuantizationType.Q8_K:
                values = dequantize_q8_k(t.data)
            else:
                values = dequantize(np.ascontiguousarray(t.data), t.tensor_type)
            values = np.asarray(values, dtype="<f4").reshape(-1)
            name = t.name.encode()
            out.write(struct.pack("<I", len(name)))
            out.write(name)
            out.write(struct.pack("<Q", values.size))
            out.write(values.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
