// Shared definitions for GhostCore's CUDA kernels: ggml block layouts, aligned-load helpers,
// warp reductions, and the device-side activation format (Q8_1, structure of arrays).
//
// Every kernel file includes this header; build.rs compiles all kernels/*.cu as one
// translation unit into one fatbin, so everything here is `static` or inline.
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

#define GC_WARP 32
#define GC_FULL_MASK 0xffffffffu

// ggml type ids (ggml.h `enum ggml_type`); the kernels dispatch on these.
#define GC_TYPE_F32 0
#define GC_TYPE_F16 1
#define GC_TYPE_Q4_0 2
#define GC_TYPE_Q4_1 3
#define GC_TYPE_Q5_0 6
#define GC_TYPE_Q8_0 8
#define GC_TYPE_Q4_K 12
#define GC_TYPE_Q6_K 14

#define QK32 32
#define QK_K 256

// ---- ggml block layouts (ggml-common.h); sizes checked below ----

struct block_q4_0 {  // 18 bytes: weight = d * (q - 8)
    half d;
    uint8_t qs[16];  // low nibbles: weights 0..15, high nibbles: 16..31
};
struct block_q4_1 {  // 20 bytes: weight = d * q + m
    half d;
    half m;
    uint8_t qs[16];
};
struct block_q5_0 {  // 22 bytes: weight = d * (q5 - 16), fifth bit in qh
    half d;
    uint8_t qh[4];
    uint8_t qs[16];
};
struct block_q8_0 {  // 34 bytes: weight = d * q
    half d;
    int8_t qs[32];
};
struct block_q4_K {  // 144 bytes, see engine-facts.md §2.1
    half d;
    half dmin;
    uint8_t scales[12];
    uint8_t qs[128];
};
struct block_q6_K {  // 210 bytes: weight = d * sc * (q6 - 32), 16 sub-blocks of 16
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    half d;
};

static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

// Functions shared with the host-side check (kernels/check/): device code, and host code
// when compiled by nvcc as a host program.
#define GC_HD static __host__ __device__ __forceinline__

// dp4a and per-byte saturating subtract, with host equivalents for the host-side check.
GC_HD int gc_dp4a(int a, int b, int c) {
#ifdef __CUDA_ARCH__
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; ++i) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#endif
}

GC_HD int gc_vsubss4(int a, int b) {
#ifdef __CUDA_ARCH__
    return __vsubss4(a, b);
#else
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) {
        int d = (int)(int8_t)(a >> (8 * i)) - (int)(int8_t)(b >> (8 * i));
        d = d < -128 ? -128 : (d > 127 ? 127 : d);
        r |= (uint32_t)(uint8_t)(int8_t)d << (8 * i);
    }
    return (int)r;
#endif
}

// ---- loads ----

// Four bytes from an address that is only 2-byte aligned (Q4_0, Q5_0, Q8_0, Q6_K rows).
GC_HD int load_i32_a2(const void* p) {
    const uint16_t* h = (const uint16_t*)p;
    return (int)((uint32_t)h[0] | ((uint32_t)h[1] << 16));
}

// N consecutive 32-bit words from a 2-byte aligned address p. On the device: N + 1 aligned
// 32-bit loads joined by funnel shifts (half the load instructions of 16-bit pairs). It reads
// up to 2 bytes before p and 4 bytes past p + 4N, which stay inside the weight allocation:
// a p that is not 4-byte aligned lies at least 2 bytes past the allocation's (256-byte
// aligned) start, and device matrices are padded at the end (WEIGHT_PADDING_BYTES). The host
// build (tests over exact-size buffers) keeps 16-bit loads.
template <int N>
GC_HD void load_words_a2(const uint8_t* p, int out[N]) {
#ifdef __CUDA_ARCH__
    const uintptr_t a = (uintptr_t)p;
    const uint32_t* w = (const uint32_t*)(a & ~(uintptr_t)3);
    const uint32_t shift = (uint32_t)(a & 3) * 8;  // 0 or 16
    uint32_t lo = w[0];
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const uint32_t hi = w[i + 1];
        out[i] = (int)__funnelshift_r(lo, hi, shift);
        lo = hi;
    }
#else
    for (int i = 0; i < N; ++i) out[i] = load_i32_a2(p + 4 * i);
#endif
}

// Four bytes from a 4-byte aligned address (Q4_1, Q4_K).
GC_HD int load_i32_a4(const void* p) {
    return *(const int*)p;
}

GC_HD float load_half(const half* p) {
    return __half2float(*p);
}

// ---- warp reductions ----

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = GC_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(GC_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = GC_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(GC_FULL_MASK, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32 floats.
// All threads receive the total.
static __device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int n_warps = blockDim.x / GC_WARP;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

static __device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int n_warps = blockDim.x / GC_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < n_warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// ---- activations on device: Q8_1 as a structure of arrays ----
//
// For n activations (n a multiple of 32): `qs` holds n int8 values (16-byte aligned, so a
// 32-value block is two int4 loads) and `ds[b] = (d, d * sum(qs of block b))`, so that
// x[i] ~= d * qs[i]. Stored as f32 (llama.cpp keeps half2); the extra precision is free here.

// ---- activation functions ----

static __device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

static __device__ __forceinline__ float gelu_tanh(float g) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g)));
}

#define GC_ACT_SILU 0
#define GC_ACT_GELU_TANH 1

static __device__ __forceinline__ float apply_act(int act, float g) {
    return act == GC_ACT_GELU_TANH ? gelu_tanh(g) : silu(g);
}
