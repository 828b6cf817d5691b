// Embedding lookup: dequantize one row of the token-embedding table, times a scale
// (1 for llama, sqrt(n_embd) for Gemma). One thread per 32-value unit.
#include "quant_blocks.cuh"

template <int TYPE>
static __device__ __forceinline__ void embed_row(const uint8_t* __restrict__ table, unsigned long long row_bytes,
                                                 int token, int n_cols, float scale, float* __restrict__ out,
                                                 const int* token_dev) {
    if (token_dev) token = *token_dev;  // decode steps replayed from a CUDA graph
    const int u = blockIdx.x * blockDim.x + threadIdx.x;
    if (u >= n_cols / 32) return;
    float w[32];
    QuantTraits<TYPE>::dequant(table + (size_t)token * row_bytes, u, w);
    float4* o = (float4*)(out + 32 * u);
#pragma unroll
    for (int i = 0; i < 8; ++i)
        o[i] = make_float4(w[4 * i] * scale, w[4 * i + 1] * scale, w[4 * i + 2] * scale, w[4 * i + 3] * scale);
}

#define GC_DEFINE_EMBED(NAME, TYPE)                                                                  \
    extern "C" __global__ void gc_embed_##NAME(const uint8_t* table, unsigned long long row_bytes,  \
                                               int token, int n_cols, float scale, float* out,      \
                                               const int* token_dev) {                              \
        embed_row<TYPE>(table, row_bytes, token, n_cols, scale, out, token_dev);                    \
    }

GC_DEFINE_EMBED(f32, GC_TYPE_F32)
GC_DEFINE_EMBED(f16, GC_TYPE_F16)
GC_DEFINE_EMBED(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_EMBED(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_EMBED(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_EMBED(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_EMBED(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_EMBED(q6_k, GC_TYPE_Q6_K)
