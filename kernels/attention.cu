// Decode attention over an f16 KV cache, split-K ("flash decoding"), with grouped-query heads.
//
// Cache layout, per layer: k_cache, v_cache = half[n_kv_heads][max_ctx][head_dim].
// Query head h reads KV head h / (n_heads / n_kv_heads).
//
//   gc_kv_store         write n_tok tokens' K and V rows (f32 -> f16) at positions pos0..pos0+n_tok
//   gc_attn_partial     grid (n_heads, n_splits): scores scale * q.k, capped to
//                       softcap * tanh(score / softcap) when softcap > 0; split s covers positions
//                       [kv_start + s*chunk, min(kv_start + (s+1)*chunk, kv_end)) and writes an
//                       unnormalized output, its running max and its sum of exponentials
//   gc_attn_combine     grid n_heads: merges the splits into out[n_heads][head_dim]
#include "common.cuh"

#define GC_ATTN_THREADS 128
#define GC_ATTN_CHUNK_MAX 256

extern "C" __global__ void gc_kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                       half* __restrict__ k_cache, half* __restrict__ v_cache,
                                       int n_kv_heads, int head_dim, int max_ctx, int pos0, int n_tok,
                                       const int* pos_dev) {
    if (pos_dev) pos0 = *pos_dev;  // decode steps replayed from a CUDA graph
    const int n = n_kv_heads * head_dim;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_tok * n) return;
    const int pos = pos0 + t / n;
    const int h = (t % n) / head_dim;
    const int d = t % head_dim;
    const size_t dst = ((size_t)h * max_ctx + pos) * head_dim + d;
    k_cache[dst] = __float2half(k[t]);
    v_cache[dst] = __float2half(v[t]);
}

// Dynamic shared memory: head_dim floats (the query). head_dim even, at most 1024.
extern "C" __global__ void __launch_bounds__(GC_ATTN_THREADS)
    gc_attn_partial(const float* __restrict__ q, const half* __restrict__ k_cache,
                    const half* __restrict__ v_cache, float* __restrict__ o_part,
                    float2* __restrict__ ml_part, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
                    int kv_start, int kv_end, int chunk, float scale, float softcap, const int* range_dev) {
    if (range_dev) {  // decode steps replayed from a CUDA graph: [kv_start, kv_end) in device memory
        kv_start = range_dev[0];
        kv_end = range_dev[1];
    }
    extern __shared__ float q_sh[];
    __shared__ float p_sh[GC_ATTN_CHUNK_MAX];
    __shared__ float scratch[32];

    const int h = blockIdx.x;
    const int split = blockIdx.y;
    const int n_splits = gridDim.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int n_warps = blockDim.x / GC_WARP;

    const int begin = kv_start + split * chunk;
    const int end = min(begin + chunk, kv_end);
    const int len = end - begin;  // may be <= 0 for trailing splits
    float* o = o_part + ((size_t)h * n_splits + split) * head_dim;

    if (len <= 0) {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = 0.0f;
        if (threadIdx.x == 0) ml_part[h * n_splits + split] = make_float2(-INFINITY, 0.0f);
        return;
    }

    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) q_sh[d] = q[(size_t)h * head_dim + d];
    __syncthreads();

    const half* kh = k_cache + (size_t)kvh * max_ctx * head_dim;
    const half* vh = v_cache + (size_t)kvh * max_ctx * head_dim;
    const float2* q2 = (const float2*)q_sh;

    // Scores: a warp per position, lanes over dimension pairs.
    for (int j = warp; j < len; j += n_warps) {
        const half2* k2 = (const half2*)(kh + (size_t)(begin + j) * head_dim);
        float s = 0.0f;
        for (int d = lane; d < head_dim / 2; d += GC_WARP) {
            const float2 kv = __half22float2(k2[d]);
            const float2 qv = q2[d];
            s += kv.x * qv.x + kv.y * qv.y;
        }
        s = warp_sum(s);
        if (lane == 0) {
            s *= scale;
            if (softcap > 0.0f) s = softcap * tanhf(s / softcap);  // Gemma 2 style logit cap
            p_sh[j] = s;
        }
    }
    __syncthreads();

    float m = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, p_sh[j]);
    m = block_max(m, scratch);
    float l = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float e = expf(p_sh[j] - m);
        p_sh[j] = e;
        l += e;
    }
    l = block_sum(l, scratch);  // its barriers also publish p_sh

    // Weighted sum of V: threads over dimensions (coalesced rows). When several heads' worth of
    // threads fit in the block (head_dim <= 64), groups of head_dim threads take every
    // n_groups-th position and their partial sums are added through shared memory.
    const int n_groups = head_dim <= (int)blockDim.x ? (int)blockDim.x / head_dim : 1;
    if (n_groups > 1) {
        __shared__ float o_sh[GC_ATTN_THREADS];
        const int g = threadIdx.x / head_dim;
        const int d = threadIdx.x % head_dim;
        float acc = 0.0f;
        if (g < n_groups) {
            for (int j = g; j < len; j += n_groups)
                acc += p_sh[j] * __half2float(vh[(size_t)(begin + j) * head_dim + d]);
            o_sh[threadIdx.x] = acc;
        }
        __syncthreads();
        if (g == 0) {
            for (int k = 1; k < n_groups; ++k) acc += o_sh[k * head_dim + d];
            o[d] = acc;
        }
    } else {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < len; ++j) acc += p_sh[j] * __half2float(vh[(size_t)(begin + j) * head_dim + d]);
            o[d] = acc;
        }
    }
    if (threadIdx.x == 0) ml_part[h * n_splits + split] = make_float2(m, l);
}

extern "C" __global__ void gc_attn_combine(const float* __restrict__ o_part, const float2* __restrict__ ml_part,
                                           float* __restrict__ out, int head_dim, int n_splits) {
    const int h = blockIdx.x;
    const float2* ml = ml_part + (size_t)h * n_splits;
    float m = -INFINITY;
    for (int s = 0; s < n_splits; ++s) m = fmaxf(m, ml[s].x);
    float l = 0.0f;
    for (int s = 0; s < n_splits; ++s) l += ml[s].y > 0.0f ? expf(ml[s].x - m) * ml[s].y : 0.0f;
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_splits; ++s) {
            if (ml[s].y > 0.0f) acc += expf(ml[s].x - m) * o_part[((size_t)h * n_splits + s) * head_dim + d];
        }
        out[(size_t)h * head_dim + d] = acc * inv_l;
    }
}
