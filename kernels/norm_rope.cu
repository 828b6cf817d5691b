// RMSNorm and rotary position embedding.
#include "common.cuh"

// out[r, i] = x[r, i] / sqrt(mean_i(x[r, :]^2) + eps) * weight[i], one block per row r.
// The weight is shared by all rows, so per-head norms (q_norm, k_norm) are one launch with
// n_rows = n_heads. out may alias x. Rows of a multiple of 4 floats are read as float4, so a
// block of n/4 threads (up to 1024) has every load of its row in flight at once: the kernel is
// latency-bound (one row of a few KB), not bandwidth-bound.
extern "C" __global__ void gc_rms_norm(const float* x, const float* __restrict__ weight, float* out,
                                       int n, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float* outr = out + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    if (n % 4 == 0) {
        const float4* x4 = (const float4*)xr;
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
            const float4 v = x4[i];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    }
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)n + eps);
    if (n % 4 == 0) {
        const float4* x4 = (const float4*)xr;
        const float4* w4 = (const float4*)weight;
        float4* o4 = (float4*)outr;
        for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
            const float4 v = x4[i];
            const float4 w = w4[i];
            o4[i] = make_float4(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) outr[i] = xr[i] * scale * weight[i];
    }
}

// In-place RoPE on x[n_tok][n_heads][head_dim], token t at position pos0 + t, rotating the
// first n_rot dims of each head. Pair i (0 <= i < n_rot/2) turns by
// theta_i = pos * freq_scale * base^(-2i/n_rot):
//   neox = 0 (llama "normal"): dims (2i, 2i+1)
//   neox = 1 (NeoX / Gemma):  dims (i, i + n_rot/2)
// One thread per (token, head, pair). pos_dev, when not null, holds pos0 in device memory
// (decode steps replayed from a CUDA graph).
extern "C" __global__ void gc_rope(float* x, int n_heads, int head_dim, int n_rot, int pos0, int n_tok,
                                   float freq_base, float freq_scale, int neox, const int* pos_dev) {
    if (pos_dev) pos0 = *pos_dev;
    const int half_rot = n_rot / 2;
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_tok * n_heads * half_rot) return;
    const int row = t / half_rot;  // token * n_heads + head
    const int i = t % half_rot;
    const int pos = pos0 + row / n_heads;
    // As ggml's CUDA rope: theta_scale^i with theta_scale = base^(-2/n_rot).
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    const float theta = freq_scale * ((float)pos * powf(theta_scale, (float)i));
    float s, c;
    sincosf(theta, &s, &c);
    float* xh = x + (size_t)row * head_dim;
    const int a = neox ? i : 2 * i;
    const int b = neox ? i + half_rot : 2 * i + 1;
    const float x0 = xh[a];
    const float x1 = xh[b];
    xh[a] = x0 * c - x1 * s;
    xh[b] = x0 * s + x1 * c;
}

// RMSNorm fused with the Q8_1 quantization of its output (the input of the next matvec):
// out[r, :] as gc_rms_norm, and xq/xds as gc_quantize_q8_1 would make from it, in one launch.
// One block per row, launched with gc_rms_norm's block size; n % 32 == 0. The quantization is
// quantize_act.cu's formula, so results are identical to the two-kernel sequence.
extern "C" __global__ void gc_rms_norm_q8_1(const float* x, const float* __restrict__ weight, float* out,
                                            int8_t* __restrict__ xq, float2* __restrict__ xds, int n,
                                            float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * n;
    float* outr = out + (size_t)blockIdx.x * n;
    // The sum of squares exactly as gc_rms_norm forms it (same float4 partition for the same
    // block size), so the normalized values match it bit for bit.
    float ss = 0.0f;
    const float4* x4 = (const float4*)xr;
    for (int i = threadIdx.x; i < n / 4; i += blockDim.x) {
        const float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)n + eps);
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int n_warps = blockDim.x / GC_WARP;
    int8_t* qr = xq + (size_t)blockIdx.x * n;
    float2* dr = xds + (size_t)blockIdx.x * (n / 32);
    for (int unit = warp; unit < n / 32; unit += n_warps) {
        const int i = 32 * unit + lane;
        const float v = xr[i] * scale * weight[i];
        outr[i] = v;
        const float amax = warp_max(fabsf(v));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const int q = (int)roundf(v * id);
        const float qsum = warp_sum((float)q);
        qr[i] = (int8_t)q;
        if (lane == 0) dr[unit] = make_float2(d, d * qsum);
    }
}
