// Decode matrix-vector products: out[r] (+)= dot(W[r, :], x) for a weight matrix stored in a
// ggml type, one row per warp, GC_MATVEC_ROWS rows per block.
//
//   gc_matvec_<type>      x given as Q8_1 (quantize_act.cu), integer dp4a dots (MMVQ shape)
//   gc_matvec_f32x_<type> x given as f32, weights dequantized in registers (DMMV shape);
//                         kept as the comparison variant for benchmarks, and for F16/F32.
//
//   gc_matmul_<type>      the same for n_tok activation rows (prefill): block (x, y) computes 32
//                         rows for tokens y*GC_MATMUL_COLS.., so each weight unit read from
//                         memory serves up to GC_MATMUL_COLS tokens and each activation tile in
//                         shared memory 32 rows. Per (row, token) the arithmetic and summation
//                         order equal gc_matvec_<type>'s exactly.
//
// Arguments: w (row-major, row_bytes apart), n_rows, n_cols (a multiple of 32), activations,
// out, accumulate (0: out = W x, 1: out += W x, e.g. to fuse a residual add).
#include "quant_blocks.cuh"

#define GC_MATVEC_ROWS 4

template <int TYPE>
static __device__ __forceinline__ void matvec_q8_1(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                   int n_rows, int n_cols, const int8_t* __restrict__ xq,
                                                   const float2* __restrict__ xds, float* __restrict__ out,
                                                   int accumulate) {
    const int row = blockIdx.x * GC_MATVEC_ROWS + threadIdx.x / GC_WARP;
    if (row >= n_rows) return;
    const float sum = warp_row_dot_q8_1<TYPE>(w + (size_t)row * row_bytes, n_cols / 32, xq, xds);
    if (threadIdx.x % GC_WARP == 0) out[row] = accumulate ? out[row] + sum : sum;
}

#define GC_MATMUL_COLS 8
#define GC_MATMUL_WARPS 8
#define GC_MATMUL_ROWS_PER_WARP 4
#define GC_MATMUL_ROWS (GC_MATMUL_WARPS * GC_MATMUL_ROWS_PER_WARP)

// xq/xds hold n_tok rows of n_cols (Q8_1, rows contiguous); out[t * n_rows + row].
// Block (x, y): rows x*GC_MATMUL_ROWS.. (each warp GC_MATMUL_ROWS_PER_WARP of them) for tokens
// y*GC_MATMUL_COLS... The tokens' activations pass through shared memory 32 units (1024
// values) at a time, so each activation byte is read from L2 once per block instead of once
// per row. Lane l takes units l, l+32, ... of its rows: the matvec kernel's order exactly.
template <int TYPE>
static __device__ __forceinline__ void matmul_q8_1(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                   int n_rows, int n_cols, int n_tok,
                                                   const int8_t* __restrict__ xq, const float2* __restrict__ xds,
                                                   float* __restrict__ out, int accumulate) {
    __shared__ __align__(16) int8_t xq_sh[GC_MATMUL_COLS][32 * GC_WARP];
    __shared__ float2 ds_sh[GC_MATMUL_COLS][GC_WARP];
    const int t0 = blockIdx.y * GC_MATMUL_COLS;
    const int nt = min(GC_MATMUL_COLS, n_tok - t0);
    const int n_units = n_cols / 32;
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int row0 = blockIdx.x * GC_MATMUL_ROWS + warp * GC_MATMUL_ROWS_PER_WARP;
    float acc[GC_MATMUL_ROWS_PER_WARP][GC_MATMUL_COLS];
#pragma unroll
    for (int r = 0; r < GC_MATMUL_ROWS_PER_WARP; ++r)
#pragma unroll
        for (int c = 0; c < GC_MATMUL_COLS; ++c) acc[r][c] = 0.0f;

    for (int k0 = 0; k0 < n_units; k0 += GC_WARP) {
        const int k_units = min(GC_WARP, n_units - k0);
        __syncthreads();  // the previous tile is consumed
        // Tile: nt tokens x k_units units of 32 int8 (two 16-byte words per unit) + scales.
        for (int i = threadIdx.x; i < GC_MATMUL_COLS * GC_WARP * 2; i += blockDim.x) {
            const int c = i / (GC_WARP * 2);
            const int unit = (i / 2) % GC_WARP;
            const int half_word = i % 2;
            if (c < nt && unit < k_units) {
                const int4* src = (const int4*)(xq + (size_t)(t0 + c) * n_cols + 32 * (k0 + unit)) + half_word;
                ((int4*)&xq_sh[c][32 * unit])[half_word] = *src;
            }
        }
        for (int i = threadIdx.x; i < GC_MATMUL_COLS * GC_WARP; i += blockDim.x) {
            const int c = i / GC_WARP;
            const int unit = i % GC_WARP;
            if (c < nt && unit < k_units) ds_sh[c][unit] = xds[(size_t)(t0 + c) * n_units + k0 + unit];
        }
        __syncthreads();
        if (lane < k_units) {
            const int u = k0 + lane;
#pragma unroll
            for (int r = 0; r < GC_MATMUL_ROWS_PER_WARP; ++r) {
                const int row = row0 + r;
                if (row < n_rows) {
                    const uint8_t* wr = w + (size_t)row * row_bytes;
#pragma unroll
                    for (int c = 0; c < GC_MATMUL_COLS; ++c) {
                        if (c < nt) acc[r][c] += QuantTraits<TYPE>::dot(wr, u, &xq_sh[c][32 * lane], ds_sh[c][lane]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GC_MATMUL_ROWS_PER_WARP; ++r) {
        const int row = row0 + r;
#pragma unroll
        for (int c = 0; c < GC_MATMUL_COLS; ++c) {
            const float sum = warp_sum(acc[r][c]);  // every lane takes part
            if (c < nt && row < n_rows && lane == 0) {
                float* o = out + (size_t)(t0 + c) * n_rows + row;
                *o = accumulate ? *o + sum : sum;
            }
        }
    }
}

template <int TYPE>
static __device__ __forceinline__ void matvec_f32x(const uint8_t* __restrict__ w, unsigned long long row_bytes,
                                                  int n_rows, int n_cols, const float* __restrict__ x,
                                                  float* __restrict__ out, int accumulate) {
    const int row = blockIdx.x * GC_MATVEC_ROWS + threadIdx.x / GC_WARP;
    if (row >= n_rows) return;
    const float sum = warp_row_dot_f32<TYPE>(w + (size_t)row * row_bytes, n_cols / 32, x);
    if (threadIdx.x % GC_WARP == 0) out[row] = accumulate ? out[row] + sum : sum;
}

#define GC_DEFINE_MATVEC_Q8_1(NAME, TYPE)                                                              \
    extern "C" __global__ void __launch_bounds__(GC_MATVEC_ROWS * GC_WARP)                             \
        gc_matvec_##NAME(const uint8_t* w, unsigned long long row_bytes, int n_rows, int n_cols,      \
                         const int8_t* xq, const float2* xds, float* out, int accumulate) {           \
        matvec_q8_1<TYPE>(w, row_bytes, n_rows, n_cols, xq, xds, out, accumulate);                    \
    }

#define GC_DEFINE_MATMUL_Q8_1(NAME, TYPE)                                                              \
    extern "C" __global__ void __launch_bounds__(GC_MATMUL_WARPS * GC_WARP)                            \
        gc_matmul_##NAME(const uint8_t* w, unsigned long long row_bytes, int n_rows, int n_cols,      \
                         int n_tok, const int8_t* xq, const float2* xds, float* out, int accumulate) { \
        matmul_q8_1<TYPE>(w, row_bytes, n_rows, n_cols, n_tok, xq, xds, out, accumulate);             \
    }

#define GC_DEFINE_MATVEC_F32X(NAME, TYPE)                                                              \
    extern "C" __global__ void __launch_bounds__(GC_MATVEC_ROWS * GC_WARP)                             \
        gc_matvec_f32x_##NAME(const uint8_t* w, unsigned long long row_bytes, int n_rows, int n_cols, \
                              const float* x, float* out, int accumulate) {                           \
        matvec_f32x<TYPE>(w, row_bytes, n_rows, n_cols, x, out, accumulate);                          \
    }

GC_DEFINE_MATVEC_Q8_1(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_MATVEC_Q8_1(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_MATVEC_Q8_1(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_MATVEC_Q8_1(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_MATVEC_Q8_1(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_MATVEC_Q8_1(q6_k, GC_TYPE_Q6_K)

GC_DEFINE_MATMUL_Q8_1(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_MATMUL_Q8_1(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_MATMUL_Q8_1(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_MATMUL_Q8_1(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_MATMUL_Q8_1(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_MATMUL_Q8_1(q6_k, GC_TYPE_Q6_K)

GC_DEFINE_MATVEC_F32X(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_MATVEC_F32X(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_MATVEC_F32X(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_MATVEC_F32X(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_MATVEC_F32X(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_MATVEC_F32X(q6_k, GC_TYPE_Q6_K)
GC_DEFINE_MATVEC_F32X(f32, GC_TYPE_F32)

// F16 weights against f32 activations (n_cols even).
extern "C" __global__ void __launch_bounds__(GC_MATVEC_ROWS * GC_WARP)
    gc_matvec_f32x_f16(const uint8_t* w, unsigned long long row_bytes, int n_rows, int n_cols,
                       const float* x, float* out, int accumulate) {
    const int row = blockIdx.x * GC_MATVEC_ROWS + threadIdx.x / GC_WARP;
    if (row >= n_rows) return;
    const float sum = warp_row_dot_f16(w + (size_t)row * row_bytes, n_cols, x);
    if (threadIdx.x % GC_WARP == 0) out[row] = accumulate ? out[row] + sum : sum;
}
