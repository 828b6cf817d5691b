// Host-side check of the per-type device math in ../quant_blocks.cuh (the same functions the
// kernels call, compiled for the host with emulated dp4a), for machines without a GPU.
// Built and driven by ghostcore/tests/cuda_kernels.rs (test `device_math_on_host`):
//
//   quant_blocks_check <type_id> <n_cols> <row.bin> <xq.bin> <xds.bin> <dots.out> <deq.out>
//
// row.bin: one row of n_cols weights of the ggml type; xq.bin: n_cols int8; xds.bin: n_cols/32
// float pairs (d, d * sum q). Writes one f32 dot per 32-weight unit (QuantTraits::dot, for
// types that have one; zeros otherwise) and the n_cols dequantized weights (QuantTraits::dequant).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "../quant_blocks.cuh"

static std::vector<unsigned char> read_all(const char* path) {
    std::vector<unsigned char> v;
    FILE* f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    fclose(f);
    return v;
}

static void write_all(const char* path, const void* p, size_t n) {
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

template <int T>
static void run_dot(const unsigned char* row, int n_units, const int8_t* xq, const float2* xds, float* dots) {
    for (int u = 0; u < n_units; ++u) dots[u] = QuantTraits<T>::dot(row, u, xq + 32 * u, xds[u]);
}

template <int T>
static void run_deq(const unsigned char* row, int n_units, float* deq) {
    for (int u = 0; u < n_units; ++u) QuantTraits<T>::dequant(row, u, deq + 32 * u);
}

int main(int argc, char** argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s type n_cols row.bin xq.bin xds.bin dots.out deq.out\n", argv[0]);
        return 2;
    }
    const int type = atoi(argv[1]);
    const int n_cols = atoi(argv[2]);
    const int n_units = n_cols / 32;
    std::vector<unsigned char> row_raw = read_all(argv[3]);
    std::vector<unsigned char> xq_raw = read_all(argv[4]);
    std::vector<unsigned char> xds_raw = read_all(argv[5]);
    if ((int)xq_raw.size() != n_cols || (int)xds_raw.size() != n_units * 8) {
        fprintf(stderr, "bad activation sizes\n");
        return 2;
    }
    // 16-byte aligned copies, as device buffers are.
    std::vector<int4> row_buf(row_raw.size() / 16 + 2), xq_buf(n_cols / 16 + 1);
    std::vector<float2> xds(n_units);
    memcpy(row_buf.data(), row_raw.data(), row_raw.size());
    memcpy(xq_buf.data(), xq_raw.data(), xq_raw.size());
    memcpy(xds.data(), xds_raw.data(), xds_raw.size());
    const unsigned char* row = (const unsigned char*)row_buf.data();
    const int8_t* xq = (const int8_t*)xq_buf.data();
    std::vector<float> dots(n_units, 0.0f), deq(n_cols, 0.0f);
    switch (type) {
        case GC_TYPE_Q4_0: run_dot<GC_TYPE_Q4_0>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q4_0>(row, n_units, deq.data()); break;
        case GC_TYPE_Q4_1: run_dot<GC_TYPE_Q4_1>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q4_1>(row, n_units, deq.data()); break;
        case GC_TYPE_Q5_0: run_dot<GC_TYPE_Q5_0>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q5_0>(row, n_units, deq.data()); break;
        case GC_TYPE_Q8_0: run_dot<GC_TYPE_Q8_0>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q8_0>(row, n_units, deq.data()); break;
        case GC_TYPE_Q4_K: run_dot<GC_TYPE_Q4_K>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q4_K>(row, n_units, deq.data()); break;
        case GC_TYPE_Q6_K: run_dot<GC_TYPE_Q6_K>(row, n_units, xq, xds.data(), dots.data()); run_deq<GC_TYPE_Q6_K>(row, n_units, deq.data()); break;
        case GC_TYPE_F16: run_deq<GC_TYPE_F16>(row, n_units, deq.data()); break;
        case GC_TYPE_F32: run_deq<GC_TYPE_F32>(row, n_units, deq.data()); break;
        default: fprintf(stderr, "unsupported type %d\n", type); return 2;
    }
    write_all(argv[6], dots.data(), dots.size() * sizeof(float));
    write_all(argv[7], deq.data(), deq.size() * sizeof(float));
    return 0;
}
