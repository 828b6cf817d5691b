// Sparse FFN for decode (CATS shape): only neurons whose activated gate passes a threshold
// are computed past the gate.
//
//   gc_sparse_gate_<type>  fused gate matvec + activation + |a| > threshold test; active
//                          neuron ids and their activated gate values are appended to a
//                          compact list through an atomic counter, one atomic per 32 rows
//                          (order between blocks is arbitrary)
//   gc_sparse_up_<type>    h[k] = a[k] * dot(W_up[ids[k], :], x) for k < *count only
//   gc_sparse_down_q8_0    out[e] (+)= sum_k h[k] * D[ids[k], e] over a neuron-major copy D
//                          of ffn_down (row i = neuron i's n_embd weights, Q8_0), so each
//                          active neuron is one contiguous row read
//
// The counter must be zero before gc_sparse_gate runs. The up and down grids are sized for
// the worst case (all neurons active) and read the count on the device.
#include "quant_blocks.cuh"

#define GC_SPARSE_ROWS 4
#define GC_GATE_WARPS 8
#define GC_GATE_ROWS_PER_WARP (GC_WARP / GC_GATE_WARPS)
#define GC_SPARSE_DOWN_THREADS 128

// Gate: GC_GATE_WARPS warps x GC_GATE_ROWS_PER_WARP rows = 32 rows per block. The block's
// active rows are compacted with one ballot and one atomicAdd (not one atomic per neuron: a
// single counter hit thousands of times per token would serialize in L2), and stay in row
// order within the block.
template <int TYPE>
static __device__ __forceinline__ void sparse_gate(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                   int n_ff, int n_cols, const int8_t* __restrict__ xq,
                                                   const float2* __restrict__ xds, int act, float threshold,
                                                   int* __restrict__ ids, float* __restrict__ a_vals,
                                                   int* __restrict__ count) {
    __shared__ float s_val[GC_WARP];
    __shared__ int s_active[GC_WARP];
    const int warp = threadIdx.x / GC_WARP;
    const int lane = threadIdx.x % GC_WARP;
    const int block_row = blockIdx.x * GC_WARP;
#pragma unroll
    for (int r = 0; r < GC_GATE_ROWS_PER_WARP; ++r) {
        const int local = warp * GC_GATE_ROWS_PER_WARP + r;
        const int row = block_row + local;
        float a = 0.0f;
        int active = 0;
        if (row < n_ff) {  // uniform across the warp
            const float g = warp_row_dot_q8_1<TYPE>(w + (size_t)row * row_bytes, n_cols / 32, xq, xds);
            a = apply_act(act, g);
            active = fabsf(a) > threshold;
        }
        if (lane == 0) {
            s_val[local] = a;
            s_active[local] = active;
        }
    }
    __syncthreads();
    if (warp == 0) {
        const int active = s_active[lane];
        const unsigned mask = __ballot_sync(GC_FULL_MASK, active);
        int base = 0;
        if (lane == 0 && mask != 0) base = atomicAdd(count, __popc(mask));
        base = __shfl_sync(GC_FULL_MASK, base, 0);
        if (active) {
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

// grid (ceil(n_embd / (4 * GC_SPARSE_DOWN_THREADS)), n_splits): each thread owns 4 consecutive
// output columns; split y takes active neurons k = y, y + n_splits, ... and adds its partial
// sums with atomics, so out must hold zeros (or the residual, to fuse the add). n_embd % 32 == 0.
extern "C" __global__ void __launch_bounds__(GC_SPARSE_DOWN_THREADS)
    gc_sparse_down_q8_0(const uint8_t* __restrict__ d_rows, unsigned long long row_bytes, int n_embd,
                        const int* __restrict__ ids, const float* __restrict__ h, const int* __restrict__ count,
                        float* __restrict__ out) {
    const int col = 4 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (col >= n_embd) return;
    const int n_active = *count;
    const size_t blk_off = (size_t)(col / 32) * sizeof(block_q8_0);
    const int in_blk = col % 32;
    float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
    for (int k = blockIdx.y; k < n_active; k += gridDim.y) {
        const block_q8_0* b = (const block_q8_0*)(d_rows + (size_t)ids[k] * row_bytes + blk_off);
        const float s = h[k] * load_half(&b->d);
        const int q = load_i32_a2(b->qs + in_blk);
        acc0 += s * (float)(int8_t)(q & 0xFF);
        acc1 += s * (float)(int8_t)((q >> 8) & 0xFF);
        acc2 += s * (float)(int8_t)((q >> 16) & 0xFF);
        acc3 += s * (float)(int8_t)((q >> 24) & 0xFF);
    }
    if (n_active > (int)blockIdx.y) {
        atomicAdd(out + col, acc0);
        atomicAdd(out + col + 1, acc1);
        atomicAdd(out + col + 2, acc2);
        atomicAdd(out + col + 3, acc3);
    }
}
