// The FFN of one decode token, dense or sparse (CATS shape, deterministic): only neurons
// whose score passes the threshold are computed past the gate, and only their rows of up and
// down are read.
//
//   gc_ffn_gate_up_<type>  per neuron n (one warp): a = act(gate_n . x); kept if
//                          |a| * scale[n] > act_threshold (scale = 1 when null: the CATS
//                          score; the calibrated mean |up_n . x| for the `upw` score); for kept
//                          neurons only, up_n is read and h = a * (up_n . x), zeroed unless
//                          |h| > product_threshold. Writes a_out[n] (a or 0; may be null) and
//                          h[n] (h or 0), and adds to counts (may be null) how many neurons
//                          passed each stage. With both thresholds negative this is the dense
//                          gate, up and gated activation in one launch.
//   gc_sparse_down_<q8_0|q4_0>  out (+)= sum_n h[n] * D[n, :] over a neuron-major copy D of
//                          ffn_down (row n = neuron n's n_embd weights), reading only the rows
//                          with h[n] != 0.
//
// Down is split in column tiles (32 lanes x a few columns each) x neuron slices. Each warp
// walks 32-neuron chunks of its slice, finds the active ones with one ballot, and streams
// their tile segments (contiguous, coalesced); the block's warps are summed in shared memory,
// each slice writes its partial tile, and the last slice of a tile to finish (a per-tile
// ticket) adds the partials in slice order. No float atomics: the result does not depend on
// scheduling, so decoding is reproducible run to run.
#include "quant_blocks.cuh"

#define GC_SPARSE_ROWS 4
#define GC_DOWN_WARPS 8
#define GC_DOWN_THREADS (GC_DOWN_WARPS * GC_WARP)
// Neurons whose tile segments are loaded before any is used (memory-level parallelism).
#define GC_DOWN_BATCH 8

// Slots of the optional per-layer counters (spread so that a layer's blocks do not all add
// into one address): counts[slot] += neurons kept past the gate, counts[GC_COUNT_SLOTS +
// slot] += neurons whose down row is read, slot = block % GC_COUNT_SLOTS.
#define GC_COUNT_SLOTS 32

template <int TYPE>
static __device__ __forceinline__ void ffn_gate_up(const uint8_t* __restrict__ gate, const uint8_t* __restrict__ up,
                                                   unsigned long long row_bytes, int n_ff, int n_cols,
                                                   const int8_t* __restrict__ xq, const float2* __restrict__ xds,
                                                   int act, float act_threshold, const float* __restrict__ scale,
                                                   float product_threshold, float* __restrict__ a_out,
                                                   float* __restrict__ h, unsigned long long* __restrict__ counts) {
    const int row = blockIdx.x * GC_SPARSE_ROWS + threadIdx.x / GC_WARP;
    const bool lead = threadIdx.x % GC_WARP == 0;
    bool kept = false;
    float hv = 0.0f;
    if (row < n_ff) {  // uniform across the warp
        const size_t off = (size_t)row * row_bytes;
        const float a = apply_act(act, warp_row_dot_q8_1<TYPE>(gate + off, n_cols / 32, xq, xds));
        const float score = scale != nullptr ? fabsf(a) * scale[row] : fabsf(a);
        kept = score > act_threshold;
        if (kept) {
            hv = a * warp_row_dot_q8_1<TYPE>(up + off, n_cols / 32, xq, xds);
            if (!(fabsf(hv) > product_threshold)) hv = 0.0f;
        }
        if (lead) {
            if (a_out != nullptr) a_out[row] = kept ? a : 0.0f;
            h[row] = hv;
        }
    }
    if (counts != nullptr) {  // uniform across the block
        const int n_kept = __syncthreads_count(lead && kept);
        const int n_read = __syncthreads_count(lead && hv != 0.0f);
        if (threadIdx.x == 0) {
            const int slot = blockIdx.x % GC_COUNT_SLOTS;
            if (n_kept) atomicAdd(counts + slot, (unsigned long long)n_kept);
            if (n_read) atomicAdd(counts + GC_COUNT_SLOTS + slot, (unsigned long long)n_read);
        }
    }
}

#define GC_DEFINE_GATE_UP(NAME, TYPE)                                                                     \
    extern "C" __global__ void __launch_bounds__(GC_SPARSE_ROWS * GC_WARP)                                \
        gc_ffn_gate_up_##NAME(const uint8_t* gate, const uint8_t* up, unsigned long long row_bytes,      \
                              int n_ff, int n_cols, const int8_t* xq, const float2* xds, int act,        \
                              float act_threshold, const float* scale, float product_threshold,          \
                              float* a_out, float* h, unsigned long long* counts) {                      \
        ffn_gate_up<TYPE>(gate, up, row_bytes, n_ff, n_cols, xq, xds, act, act_threshold, scale,         \
                          product_threshold, a_out, h, counts);                                          \
    }

GC_DEFINE_GATE_UP(q4_0, GC_TYPE_Q4_0)
GC_DEFINE_GATE_UP(q4_1, GC_TYPE_Q4_1)
GC_DEFINE_GATE_UP(q5_0, GC_TYPE_Q5_0)
GC_DEFINE_GATE_UP(q8_0, GC_TYPE_Q8_0)
GC_DEFINE_GATE_UP(q4_k, GC_TYPE_Q4_K)
GC_DEFINE_GATE_UP(q6_k, GC_TYPE_Q6_K)

// The neuron-major copies are stored "split" (NeuronMajorDown::upload_typed): each row holds
// the quants of its n_embd weights first (ggml's order within each 32-weight block), then the
// blocks' f16 scales, and rows are 16-byte aligned. A lane reads its columns with one 16-byte
// load and one scale; a warp reads a contiguous run of quants.
//
// DownTile<T>: COLS columns a lane, tile = 32 * COLS columns; `load` fetches a lane's quants
// and scale of one row (issued for several neurons before any is used), `add` accumulates
// coef * weight into acc[COLS] (acc[c] is tile column lane * COLS + c).
template <int TYPE> struct DownTile;

// Q8_0: 16 columns a lane (half a block), tile = 512 columns.
template <> struct DownTile<GC_TYPE_Q8_0> {
    static constexpr int COLS = 16;
    struct Raw {
        float d;
        int4 q;
    };
    static __device__ __forceinline__ void load(const uint8_t* row, int n_embd, int col, Raw& r) {
        r.q = *(const int4*)(row + col);
        r.d = load_half((const half*)(row + n_embd) + col / 32);
    }
    static __device__ __forceinline__ void add(const Raw& r, float coef, float acc[COLS]) {
        const float s = coef * r.d;
        const int w[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
        for (int i = 0; i < COLS; ++i) acc[i] += s * (float)(int8_t)(w[i / 4] >> (8 * (i % 4)));
    }
};

// Q4_0: 32 columns a lane (one block: byte j holds column j in its low nibble and 16 + j in
// its high nibble), tile = 1024 columns.
template <> struct DownTile<GC_TYPE_Q4_0> {
    static constexpr int COLS = 32;
    struct Raw {
        float d;
        int4 q;
    };
    static __device__ __forceinline__ void load(const uint8_t* row, int n_embd, int col, Raw& r) {
        r.q = *(const int4*)(row + col / 2);
        r.d = load_half((const half*)(row + n_embd / 2) + col / 32);
    }
    static __device__ __forceinline__ void add(const Raw& r, float coef, float acc[COLS]) {
        const float s = coef * r.d;
        const int w[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int byte = (w[j / 4] >> (8 * (j % 4))) & 0xFF;
            acc[j] += s * (float)((byte & 0x0F) - 8);
            acc[16 + j] += s * (float)((byte >> 4) - 8);
        }
    }
};

// grid (n_tiles, n_slices), GC_DOWN_THREADS threads. Slice s covers neurons
// [s * slice_len, (s + 1) * slice_len) (slice_len a multiple of 32). partials holds
// n_slices * n_embd floats, tickets n_tiles zeros (left at zero on exit). n_embd % 32 == 0.
template <int TYPE>
static __device__ __forceinline__ void sparse_down(const uint8_t* __restrict__ d_rows, unsigned long long row_bytes,
                                                   int n_ff, int n_embd, int slice_len,
                                                   const float* __restrict__ h, float* __restrict__ partials,
                                                   unsigned int* __restrict__ tickets, float* __restrict__ out,
                                                   int accumulate) {
    using T = DownTile<TYPE>;
    constexpr int TILE = GC_WARP * T::COLS;
    // Lane-major with one float of padding per lane: the stores (lanes at stride COLS + 1)
    // and the column-order reads below both avoid bank conflicts.
    constexpr int LANE_STRIDE = T::COLS + 1;
    __shared__ float s_red[GC_DOWN_WARPS][GC_WARP * LANE_STRIDE];
    __shared__ bool s_last;
    const int lane = threadIdx.x % GC_WARP;
    const int warp = threadIdx.x / GC_WARP;
    const int tile_col0 = blockIdx.x * TILE;
    // Lanes past n_embd (last tile of a width that is not a multiple of TILE) load nothing
    // (n_embd is a multiple of 32, COLS divides 32: a lane's columns are all in or all out).
    const int lane_col = tile_col0 + lane * T::COLS;
    const bool lane_in = lane_col < n_embd;
    const int n_begin = blockIdx.y * slice_len;
    const int n_end = min(n_begin + slice_len, n_ff);

    float acc[T::COLS];
#pragma unroll
    for (int c = 0; c < T::COLS; ++c) acc[c] = 0.0f;

    for (int chunk = n_begin + 32 * warp; chunk < n_end; chunk += 32 * GC_DOWN_WARPS) {
        const int n = chunk + lane;
        const float hv = n < n_end ? h[n] : 0.0f;
        unsigned mask = __ballot_sync(GC_FULL_MASK, hv != 0.0f);
        while (mask != 0) {
            int src[GC_DOWN_BATCH];
            typename T::Raw raw[GC_DOWN_BATCH];
#pragma unroll
            for (int j = 0; j < GC_DOWN_BATCH; ++j) {
                src[j] = mask != 0 ? __ffs(mask) - 1 : -1;
                if (mask != 0) mask &= mask - 1;
                if (src[j] >= 0 && lane_in) T::load(d_rows + (size_t)(chunk + src[j]) * row_bytes, n_embd, lane_col, raw[j]);
            }
#pragma unroll
            for (int j = 0; j < GC_DOWN_BATCH; ++j) {
                const float coef = __shfl_sync(GC_FULL_MASK, hv, src[j] >= 0 ? src[j] : 0);
                if (src[j] >= 0 && lane_in) T::add(raw[j], coef, acc);
            }
        }
    }

    // Sum the block's warps (fixed order), then this slice's partial tile.
#pragma unroll
    for (int c = 0; c < T::COLS; ++c) s_red[warp][lane * LANE_STRIDE + c] = acc[c];
    __syncthreads();
    float* part = partials + (size_t)blockIdx.y * n_embd;
    for (int i = threadIdx.x; i < TILE; i += GC_DOWN_THREADS) {
        if (tile_col0 + i < n_embd) {
            const int at = (i / T::COLS) * LANE_STRIDE + i % T::COLS;
            float s = 0.0f;
#pragma unroll
            for (int w = 0; w < GC_DOWN_WARPS; ++w) s += s_red[w][at];
            part[tile_col0 + i] = s;
        }
    }
    // The last slice of this tile adds all partials in slice order (threadfence + ticket:
    // the usual last-block pattern).
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned int ticket = atomicAdd(tickets + blockIdx.x, 1u);
        s_last = ticket == gridDim.y - 1;
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    // Each thread adds the partials of its TILE / GC_DOWN_THREADS columns in slice order;
    // the loads of 8 slices x all its columns are issued before their adds (one dependent
    // load per slice and column would serialize hundreds of L2 round trips).
    constexpr int PER_THREAD = TILE / GC_DOWN_THREADS;
    const int n_slices = (int)gridDim.y;
    float sum[PER_THREAD];
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) sum[j] = 0.0f;
    for (int k0 = 0; k0 < n_slices; k0 += 8) {
        float v[8][PER_THREAD];
#pragma unroll
        for (int k = 0; k < 8; ++k)
#pragma unroll
            for (int j = 0; j < PER_THREAD; ++j) {
                const int col = tile_col0 + threadIdx.x + j * GC_DOWN_THREADS;
                v[k][j] = k0 + k < n_slices && col < n_embd ? __ldcg(partials + (size_t)(k0 + k) * n_embd + col) : 0.0f;
            }
#pragma unroll
        for (int k = 0; k < 8; ++k)
#pragma unroll
            for (int j = 0; j < PER_THREAD; ++j) sum[j] += v[k][j];
    }
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) {
        const int col = tile_col0 + threadIdx.x + j * GC_DOWN_THREADS;
        if (col < n_embd) out[col] = accumulate ? out[col] + sum[j] : sum[j];
    }
    if (threadIdx.x == 0) tickets[blockIdx.x] = 0;
}

extern "C" __global__ void __launch_bounds__(GC_DOWN_THREADS)
    gc_sparse_down_q8_0(const uint8_t* d_rows, unsigned long long row_bytes, int n_ff, int n_embd, int slice_len,
                        const float* h, float* partials, unsigned int* tickets, float* out, int accumulate) {
    sparse_down<GC_TYPE_Q8_0>(d_rows, row_bytes, n_ff, n_embd, slice_len, h, partials, tickets, out, accumulate);
}

extern "C" __global__ void __launch_bounds__(GC_DOWN_THREADS)
    gc_sparse_down_q4_0(const uint8_t* d_rows, unsigned long long row_bytes, int n_ff, int n_embd, int slice_len,
                        const float* h, float* partials, unsigned int* tickets, float* out, int accumulate) {
    sparse_down<GC_TYPE_Q4_0>(d_rows, row_bytes, n_ff, n_embd, slice_len, h, partials, tickets, out, accumulate);
}
