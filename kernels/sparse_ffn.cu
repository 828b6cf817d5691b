// Sparse FFN for decode (CATS shape): only neurons whose activated gate passes a threshold
// are computed past the gate.
//
//   gc_sparse_gate_<type>  fused gate matvec + activation + |a| > threshold test; active
//                          neuron ids and their activated gate values are appended to a
//                          compact list through an atomic counter, one atomic per 32 rows
//                          (order between blocks is arbitrary)
//   gc_sparse_up_<type>    h[k] = a[k] * dot(W_up[ids[k], :], x) for k < *count only
//   gc_sparse_down_<q8_0|q4_0>  out[e] (+)= sum_k h[k] * D[ids[k], e] over a neuron-major copy
//                          D of ffn_down (row i = neuron i's n_embd weights, Q8_0 or Q4_0), so
//                          each active neuron is one contiguous row read
//
// The counter must be zero before gc_sparse_gate runs. The up and down grids are sized for
// the worst case (all neurons active) and read the count on the device.
#include "quant_blocks.cuh"

#define GC_SPARSE_ROWS 4
#define GC_GATE_WARPS 8
#define GC_SPARSE_DOWN_THREADS 256

// Gate: one row per warp, GC_GATE_WARPS rows per block (as many rows in flight as the dense
// matvec). The block's active rows are compacted with one ballot and one atomicAdd (not one
// atomic per neuron: a single counter hit thousands of times per token would serialize in
// L2), and stay in row order within the block.
template <int TYPE>
static __device__ __forceinline__ void sparse_gate(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                   int n_ff, int n_cols, const int8_t* __restrict__ xq,
                                                   const float2* __restrict__ xds, int act, float threshold,
                                                   int* __restrict__ ids, float* __restrict__ a_vals,
                                                   int* __restrict__ count) {
    __shared__ float s_val[GC_GATE_WARPS];
    __shared__ int s_active[GC_GATE_WARPS];
    const int warp = threadIdx.x / GC_WARP;
    const int lane = threadIdx.x % GC_WARP;
    const int block_row = blockIdx.x * GC_GATE_WARPS;
    const int row = block_row + warp;
    float a = 0.0f;
    int active = 0;
    if (row < n_ff) {  // uniform across the warp
        const float g = warp_row_dot_q8_1<TYPE>(w + (size_t)row * row_bytes, n_cols / 32, xq, xds);
        a = apply_act(act, g);
        active = fabsf(a) > threshold;
    }
    if (lane == 0) {
        s_val[warp] = a;
        s_active[warp] = active;
    }
    __syncthreads();
    if (warp == 0) {
        const int mine = lane < GC_GATE_WARPS ? s_active[lane] : 0;
        const unsigned mask = __ballot_sync(GC_FULL_MASK, mine);
        int base = 0;
        if (lane == 0 && mask != 0) base = atomicAdd(count, __popc(mask));
        base = __shfl_sync(GC_FULL_MASK, base, 0);
        if (mine) {
            const int slot = base + __popc(mask & ((1u << lane) - 1u));
            ids[slot] = block_row + lane;
            a_vals[slot] = s_val[lane];
        }
    }
}

template <int TYPE>
static __device__ __forceinline__ void sparse_up(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                 int n_cols, const int8_t* __restrict__ xq,
                                                 const float2* __restrict__ xds, const int* __restrict__ ids,
                                                 const float* __restrict__ a_vals, const int* __restrict__ count,
                                                 float* __restrict__ h) {
    const int k = blockIdx.x * GC_SPARSE_ROWS + threadIdx.x / GC_WARP;
    if (k >= *count) return;
    const float u = warp_row_dot_q8_1<TYPE>(w + (size_t)ids[k] * row_bytes, n_cols / 32, xq, xds);
    if (threadIdx.x % GC_WARP == 0) h[k] = a_vals[k] * u;
}

#define GC_DEFINE_SPARSE(NAME, TYPE)                                                                     \
    extern "C" __global__ void __launch_bounds__(GC_GATE_WARPS * GC_WARP)                                \
        gc_sparse_gate_##NAME(const uint8_t* w, unsigned long long row_bytes, int n_ff, int n_cols,     \
                              const int8_t* xq, const float2* xds, int act, float threshold, int* ids,  \
                              float* a_vals, int* count) {                                              \
        sparse_gate<TYPE>(w, row_bytes, n_ff, n_cols, xq, xds, act, threshold, ids, a_vals, count);     \
    }                                                                                                   \
    extern "C" __global__ void __launch_bounds__(GC_SPARSE_ROWS * GC_WARP)                               \
        gc_sparse_up_##NAME(const uint8_t* w, unsigned long long row_bytes, int n_cols, const int8_t* xq, \
                            const float2* xds, const int* ids, const float* a_vals, const int* count,   \
                            float* h) {                                                                 \
        sparse_up<TYPE>(w, row_bytes, n_cols, xq, xds, ids, a_vals, count, h);                          \
    }

GC_DEFINE_SPARSE(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_SPARSE(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_SPARSE(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_SPARSE(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_SPARSE(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_SPARSE(q6_k, GC_TYPE_Q6_K)

// grid (n_blocks): the active list is cut into n_blocks contiguous slices; a block streams its
// neurons' rows (each thread owns 4-column groups tid, tid + 256, ..., so a row is read by the
// whole block in one coalesced sweep), keeps the partial sums in registers and adds them to out
// with one atomic per column at the end. ids and h of the slice are staged in shared memory
// first, so the row loads of successive neurons do not wait on each other. out must hold zeros
// (or the residual, to fuse the add). n_embd % 32 == 0 and n_embd <= 4 * 256 * GC_DOWN_GROUPS.
#define GC_DOWN_GROUPS 8
#define GC_DOWN_SLICE_MAX 256
#define GC_DOWN_SLICE_MIN 16

// Four consecutive weights (col % 4 == 0) of a neuron-major row: `load` fetches the block
// scale and the packed quants (issued for several neurons before any is used), `unpack`
// turns the packed word into four integers.
template <int TYPE> struct DownRow;
template <> struct DownRow<GC_TYPE_Q8_0> {
    static __device__ __forceinline__ void load(const uint8_t* row, int col, float& d, int& q) {
        const block_q8_0* b = (const block_q8_0*)row + col / 32;
        d = load_half(&b->d);
        q = load_i32_a2(b->qs + col % 32);
    }
    static __device__ __forceinline__ void unpack(int q, int /*col*/, int v[4]) {
        v[0] = (int8_t)(q & 0xFF);
        v[1] = (int8_t)((q >> 8) & 0xFF);
        v[2] = (int8_t)((q >> 16) & 0xFF);
        v[3] = (int8_t)((q >> 24) & 0xFF);
    }
};
// Q4_0: element j of a block is the low nibble of qs[j] (j < 16) or the high nibble of
// qs[j - 16], minus 8.
template <> struct DownRow<GC_TYPE_Q4_0> {
    static __device__ __forceinline__ void load(const uint8_t* row, int col, float& d, int& q) {
        const block_q4_0* b = (const block_q4_0*)row + col / 32;
        d = load_half(&b->d);
        q = load_i32_a2(b->qs + (col % 32 & 15));
    }
    static __device__ __forceinline__ void unpack(int q, int col, int v[4]) {
        const int shift = col % 32 < 16 ? 0 : 4;
        v[0] = ((q >> shift) & 0x0F) - 8;
        v[1] = ((q >> (8 + shift)) & 0x0F) - 8;
        v[2] = ((q >> (16 + shift)) & 0x0F) - 8;
        v[3] = ((q >> (24 + shift)) & 0x0F) - 8;
    }
};

#define GC_DOWN_BATCH 4

template <int TYPE>
static __device__ __forceinline__ void sparse_down(const uint8_t* __restrict__ d_rows, unsigned long long row_bytes,
                                                   int n_embd, const int* __restrict__ ids,
                                                   const float* __restrict__ h, const int* __restrict__ count,
                                                   float* __restrict__ out) {
    __shared__ int s_ids[GC_DOWN_SLICE_MAX];
    __shared__ float s_h[GC_DOWN_SLICE_MAX];
    const int n_active = *count;
    // At least GC_DOWN_SLICE_MIN neurons a block: every block that works adds n_embd atomics,
    // which at high sparsity would otherwise cost more than the rows it reads.
    const int slice = max(GC_DOWN_SLICE_MIN, (n_active + (int)gridDim.x - 1) / (int)gridDim.x);
    const int k_begin = blockIdx.x * slice;
    const int k_end = min(k_begin + slice, n_active);
    if (k_begin >= k_end) return;
    const int n_groups = n_embd / 4;
    float acc[GC_DOWN_GROUPS][4];
#pragma unroll
    for (int g = 0; g < GC_DOWN_GROUPS; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += GC_DOWN_SLICE_MAX) {
        const int k_n = min(GC_DOWN_SLICE_MAX, k_end - k0);
        __syncthreads();
        for (int i = threadIdx.x; i < k_n; i += blockDim.x) {
            s_ids[i] = ids[k0 + i];
            s_h[i] = h[k0 + i];
        }
        __syncthreads();
        for (int i0 = 0; i0 < k_n; i0 += GC_DOWN_BATCH) {
#pragma unroll
            for (int g = 0; g < GC_DOWN_GROUPS; ++g) {
                const int cg = threadIdx.x + g * GC_SPARSE_DOWN_THREADS;
                if (cg < n_groups) {  // uniform for whole warps but the last partial one
                    const int col = 4 * cg;
                    // Every load of the batch first, then the arithmetic.
                    float d[GC_DOWN_BATCH];
                    int q[GC_DOWN_BATCH];
#pragma unroll
                    for (int j = 0; j < GC_DOWN_BATCH; ++j) {
                        d[j] = 0.0f;
                        q[j] = 0;
                        if (i0 + j < k_n) DownRow<TYPE>::load(d_rows + (size_t)s_ids[i0 + j] * row_bytes, col, d[j], q[j]);
                    }
#pragma unroll
                    for (int j = 0; j < GC_DOWN_BATCH; ++j) {
                        if (i0 + j < k_n) {
                            int v[4];
                            DownRow<TYPE>::unpack(q[j], col, v);
                            const float sc = s_h[i0 + j] * d[j];
#pragma unroll
                            for (int e = 0; e < 4; ++e) acc[g][e] += sc * (float)v[e];
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int g = 0; g < GC_DOWN_GROUPS; ++g) {
        const int cg = threadIdx.x + g * GC_SPARSE_DOWN_THREADS;
        if (cg < n_groups) {
#pragma unroll
            for (int j = 0; j < 4; ++j) atomicAdd(out + 4 * cg + j, acc[g][j]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(GC_SPARSE_DOWN_THREADS)
    gc_sparse_down_q8_0(const uint8_t* d_rows, unsigned long long row_bytes, int n_embd, const int* ids,
                        const float* h, const int* count, float* out) {
    sparse_down<GC_TYPE_Q8_0>(d_rows, row_bytes, n_embd, ids, h, count, out);
}

extern "C" __global__ void __launch_bounds__(GC_SPARSE_DOWN_THREADS)
    gc_sparse_down_q4_0(const uint8_t* d_rows, unsigned long long row_bytes, int n_embd, const int* ids,
                        const float* h, const int* count, float* out) {
    sparse_down<GC_TYPE_Q4_0>(d_rows, row_bytes, n_embd, ids, h, count, out);
}
