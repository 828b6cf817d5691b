// Per-type device primitives over "units" of 32 consecutive weights of one row:
//   dot_unit<T>(row, u, q8, ds)  integer dot of unit u with a Q8_1 activation block (dp4a)
//   dequant_unit<T>(row, u, w)   the unit's 32 weights as f32 (reference order of ggml)
// Every supported type splits a row into n_cols/32 such units, so one kernel shape (a warp
// per row, lanes striding over units) serves all of them. Layouts: ggml-common.h.
#pragma once

#include "common.cuh"

// ggml get_scale_min_k4: 6-bit scale and min of sub-block j (0..7) of a Q4_K block.
GC_HD void q4k_scale_min(const uint8_t* s, int j, int& sc, int& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The eight int32 words (32 int8 values) of an activation block; 16-byte aligned.
GC_HD void load_q8_words(const int8_t* q8, int v[8]) {
    const int4 a = ((const int4*)q8)[0];
    const int4 b = ((const int4*)q8)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

template <int TYPE> struct QuantTraits;

// ---------------------------------------------------------------- Q4_0
template <> struct QuantTraits<GC_TYPE_Q4_0> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q4_0* b = (const block_q4_0*)row + u;
        int y[8];
        load_q8_words(q8, y);
        int qs[4];
        load_words_a2<4>(b->qs, qs);
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = qs[i];
            sumi = gc_dp4a(v & 0x0F0F0F0F, y[i], sumi);
            sumi = gc_dp4a((v >> 4) & 0x0F0F0F0F, y[i + 4], sumi);
        }
        // sum d*(q-8)*d8*q8 = d*(d8*sumi - 8*s8)
        return load_half(&b->d) * (ds.x * (float)sumi - 8.0f * ds.y);
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q4_0* b = (const block_q4_0*)row + u;
        const float d = load_half(&b->d);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            w[j] = d * (float)((b->qs[j] & 0x0F) - 8);
            w[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
};

// ---------------------------------------------------------------- Q4_1
template <> struct QuantTraits<GC_TYPE_Q4_1> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q4_1* b = (const block_q4_1*)row + u;
        int y[8];
        load_q8_words(q8, y);
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = load_i32_a4(b->qs + 4 * i);
            sumi = gc_dp4a(v & 0x0F0F0F0F, y[i], sumi);
            sumi = gc_dp4a((v >> 4) & 0x0F0F0F0F, y[i + 4], sumi);
        }
        // sum (d*q + m)*d8*q8 = d*d8*sumi + m*s8
        return load_half(&b->d) * ds.x * (float)sumi + load_half(&b->m) * ds.y;
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q4_1* b = (const block_q4_1*)row + u;
        const float d = load_half(&b->d);
        const float m = load_half(&b->m);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            w[j] = d * (float)(b->qs[j] & 0x0F) + m;
            w[j + 16] = d * (float)(b->qs[j] >> 4) + m;
        }
    }
};

// ---------------------------------------------------------------- Q5_0
// Spread 4 bits of qh (starting at bit `first`) to bit 4 of each byte of a word.
GC_HD int q5_high_bits(uint32_t qh, int first) {
    const uint32_t h = qh >> first;
    return (int)(((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25));
}

template <> struct QuantTraits<GC_TYPE_Q5_0> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q5_0* b = (const block_q5_0*)row + u;
        int y[8];
        load_q8_words(q8, y);
        // qh and qs are contiguous: five words from one run of loads.
        int words[5];
        load_words_a2<5>(b->qh, words);
        const uint32_t qh = (uint32_t)words[0];
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int v = words[1 + i];
            const int lo = (v & 0x0F0F0F0F) | q5_high_bits(qh, 4 * i);
            const int hi = ((v >> 4) & 0x0F0F0F0F) | q5_high_bits(qh, 16 + 4 * i);
            sumi = gc_dp4a(lo, y[i], sumi);
            sumi = gc_dp4a(hi, y[i + 4], sumi);
        }
        return load_half(&b->d) * (ds.x * (float)sumi - 16.0f * ds.y);
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q5_0* b = (const block_q5_0*)row + u;
        const float d = load_half(&b->d);
        const uint32_t qh = (uint32_t)b->qh[0] | ((uint32_t)b->qh[1] << 8) |
                            ((uint32_t)b->qh[2] << 16) | ((uint32_t)b->qh[3] << 24);
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int h0 = ((qh >> j) << 4) & 0x10;
            const int h1 = (qh >> (j + 12)) & 0x10;
            w[j] = d * (float)(((b->qs[j] & 0x0F) | h0) - 16);
            w[j + 16] = d * (float)(((b->qs[j] >> 4) | h1) - 16);
        }
    }
};

// ---------------------------------------------------------------- Q8_0
template <> struct QuantTraits<GC_TYPE_Q8_0> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q8_0* b = (const block_q8_0*)row + u;
        int y[8];
        load_q8_words(q8, y);
        int qs[8];
        load_words_a2<8>((const uint8_t*)b->qs, qs);
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) sumi = gc_dp4a(qs[i], y[i], sumi);
        return load_half(&b->d) * ds.x * (float)sumi;
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q8_0* b = (const block_q8_0*)row + u;
        const float d = load_half(&b->d);
#pragma unroll
        for (int j = 0; j < 32; ++j) w[j] = d * (float)b->qs[j];
    }
};

// ---------------------------------------------------------------- Q4_K
// Unit u = sub-block g = u % 8 of super-block u / 8. Sub-block g lives in the low (g even)
// or high (g odd) nibbles of qs[32*(g/2) .. 32*(g/2)+31].
template <> struct QuantTraits<GC_TYPE_Q4_K> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q4_K* b = (const block_q4_K*)row + u / 8;
        const int g = u % 8;
        const int shift = 4 * (g & 1);
        const uint8_t* qs = b->qs + 32 * (g / 2);
        int y[8];
        load_q8_words(q8, y);
        // qs sits at byte 16 of a 144-byte block: 16-byte aligned, two vector loads.
        const int4 qa = ((const int4*)qs)[0];
        const int4 qb = ((const int4*)qs)[1];
        const int q[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
        int sumi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) sumi = gc_dp4a((q[i] >> shift) & 0x0F0F0F0F, y[i], sumi);
        int sc, m;
        q4k_scale_min(b->scales, g, sc, m);
        // sum (d*sc*q - dmin*m)*d8*q8 = d*sc*d8*sumi - dmin*m*s8
        return load_half(&b->d) * (float)sc * ds.x * (float)sumi - load_half(&b->dmin) * (float)m * ds.y;
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q4_K* b = (const block_q4_K*)row + u / 8;
        const int g = u % 8;
        const int shift = 4 * (g & 1);
        const uint8_t* qs = b->qs + 32 * (g / 2);
        int sc, m;
        q4k_scale_min(b->scales, g, sc, m);
        const float d = load_half(&b->d) * (float)sc;
        const float mn = load_half(&b->dmin) * (float)m;
#pragma unroll
        for (int l = 0; l < 32; ++l) w[l] = d * (float)((qs[l] >> shift) & 0x0F) - mn;
    }
};

// ---------------------------------------------------------------- Q6_K
// Unit u = group g = u % 8 of super-block u / 8: half n = g / 4 (128 weights), quarter k = g % 4.
// Low 4 bits: ql[64n + 32*(k&1) + l], low (k < 2) or high (k >= 2) nibble; high 2 bits:
// qh[32n + l] >> 2k. Scales sc[8n + 2k] for l < 16 and sc[8n + 2k + 1] for l >= 16.
template <> struct QuantTraits<GC_TYPE_Q6_K> {
    static __host__ __device__ __forceinline__ float dot(const uint8_t* row, int u, const int8_t* q8, float2 ds) {
        const block_q6_K* b = (const block_q6_K*)row + u / 8;
        const int g = u % 8;
        const int n = g / 4;
        const int k = g % 4;
        const uint8_t* ql = b->ql + 64 * n + 32 * (k & 1);
        const uint8_t* qh = b->qh + 32 * n;
        const int lshift = 4 * (k >> 1);
        const int hshift = 2 * k;
        int y[8];
        load_q8_words(q8, y);
        int qlw[8], qhw[8];
        load_words_a2<8>(ql, qlw);
        load_words_a2<8>(qh, qhw);
        int sum_a = 0, sum_b = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int lo = (qlw[i] >> lshift) & 0x0F0F0F0F;
            const int hi = ((qhw[i] >> hshift) & 0x03030303) << 4;
            const int q = gc_vsubss4(lo | hi, 0x20202020);
            if (i < 4) sum_a = gc_dp4a(q, y[i], sum_a);
            else sum_b = gc_dp4a(q, y[i], sum_b);
        }
        const int sc_a = b->scales[8 * n + 2 * k];
        const int sc_b = b->scales[8 * n + 2 * k + 1];
        return load_half(&b->d) * ds.x * (float)(sc_a * sum_a + sc_b * sum_b);
    }
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const block_q6_K* b = (const block_q6_K*)row + u / 8;
        const int g = u % 8;
        const int n = g / 4;
        const int k = g % 4;
        const uint8_t* ql = b->ql + 64 * n + 32 * (k & 1);
        const uint8_t* qh = b->qh + 32 * n;
        const int lshift = 4 * (k >> 1);
        const int hshift = 2 * k;
        const float d = load_half(&b->d);
#pragma unroll
        for (int l = 0; l < 32; ++l) {
            const int q = (((ql[l] >> lshift) & 0x0F) | (((qh[l] >> hshift) & 3) << 4)) - 32;
            w[l] = d * (float)b->scales[8 * n + 2 * k + l / 16] * (float)q;
        }
    }
};

// ---------------------------------------------------------------- F16 (dequant only; the
// F16 matvec reads f32 activations directly, see quant_matvec.cu)
template <> struct QuantTraits<GC_TYPE_F16> {
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const half* h = (const half*)row + 32 * u;
#pragma unroll
        for (int l = 0; l < 32; ++l) w[l] = __half2float(h[l]);
    }
};

template <> struct QuantTraits<GC_TYPE_F32> {
    static __host__ __device__ __forceinline__ void dequant(const uint8_t* row, int u, float w[32]) {
        const float* f = (const float*)row + 32 * u;
#pragma unroll
        for (int l = 0; l < 32; ++l) w[l] = f[l];
    }
};

// Dot of one weight row (n_units units) with Q8_1 activations, reduced over the warp; every
// lane gets the total.
template <int TYPE>
static __device__ __forceinline__ float warp_row_dot_q8_1(const uint8_t* row, int n_units,
                                                          const int8_t* xq, const float2* xds) {
    const int lane = threadIdx.x % GC_WARP;
    float acc = 0.0f;
    // Unrolled so that four units' loads are in flight per lane (decode rows are a few
    // hundred units: latency, not bandwidth, limits one warp). The sum order is unchanged.
#pragma unroll 4
    for (int u = lane; u < n_units; u += GC_WARP) {
        acc += QuantTraits<TYPE>::dot(row, u, xq + 32 * u, xds[u]);
    }
    return warp_sum(acc);
}

// Dot of one weight row with f32 activations, dequantizing each unit (the "DMMV" path).
template <int TYPE>
static __device__ __forceinline__ float warp_row_dot_f32(const uint8_t* row, int n_units, const float* x) {
    const int lane = threadIdx.x % GC_WARP;
    float acc = 0.0f;
    for (int u = lane; u < n_units; u += GC_WARP) {
        float w[32];
        QuantTraits<TYPE>::dequant(row, u, w);
        const float4* x4 = (const float4*)(x + 32 * u);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 v = x4[i];
            acc += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
        }
    }
    return warp_sum(acc);
}

// F16 row against f32 activations: lanes stride over half2 pairs (coalesced).
static __device__ __forceinline__ float warp_row_dot_f16(const uint8_t* row, int n_cols, const float* x) {
    const int lane = threadIdx.x % GC_WARP;
    const half2* w2 = (const half2*)row;
    const float2* x2 = (const float2*)x;
    float acc = 0.0f;
    for (int i = lane; i < n_cols / 2; i += GC_WARP) {
        const float2 w = __half22float2(w2[i]);
        const float2 v = x2[i];
        acc += w.x * v.x + w.y * v.y;
    }
    return warp_sum(acc);
}
