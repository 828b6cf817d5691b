// Activation quantization to Q8_1 (structure of arrays, see common.cuh), once per matvec input.
// One warp per 32-value block, one value per lane: d = max|x| / 127, q = round(x / d)
// (half away from zero, as ggml quantize_row_q8_1_ref), ds = (d, d * sum(q)).
#include "common.cuh"

extern "C" __global__ void gc_quantize_q8_1(const float* __restrict__ x, int8_t* __restrict__ xq,
                                            float2* __restrict__ xds, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;  // blockDim.x is a multiple of 32
    if (i - (int)(threadIdx.x % GC_WARP) >= n) return;  // whole warp past the end
    const float v = i < n ? x[i] : 0.0f;
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = (int)roundf(v * id);
    const float qsum = warp_sum((float)q);
    if (i < n) xq[i] = (int8_t)q;
    if (threadIdx.x % GC_WARP == 0 && i < n) xds[i / 32] = make_float2(d, d * qsum);
}
