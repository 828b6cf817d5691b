// Elementwise kernels of the dense FFN and the residual stream.
#include "common.cuh"

// out[i] = act(gate[i]) * up[i]; act: GC_ACT_SILU or GC_ACT_GELU_TANH. out may alias either input.
extern "C" __global__ void gc_gated_act(const float* gate, const float* up, float* out, int n, int act) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = apply_act(act, gate[i]) * up[i];
}

// x[i] += y[i]
extern "C" __global__ void gc_add_inplace(float* __restrict__ x, const float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}
