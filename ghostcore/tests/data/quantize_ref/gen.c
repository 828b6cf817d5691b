// Generates ggml_ref.bin: ggml's reference quantizers (quantize_row_*_ref) applied to
// the deterministic test vector that ghostcore/tests/quantize_ggml_ref.rs rebuilds.
//
// Build against llama.cpp's ggml sources (the copy vendored in llama-cpp-python 0.3.36,
// llama.cpp 0c1e57098), compiled as ggml-base is: plain -O2, no -march, no FMA:
//   G=.../vendor/llama.cpp/ggml
//   gcc -O2 -ffp-contract=off -I$G/include -I$G/src gen.c $G/src/ggml-quants.c \
//       stubs.c -lm -o gen && ./gen > ggml_ref.bin
// Output: for each type in TYPES order, the bytes of quantizing all N values as one row.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "ggml.h"
#include "ggml-quants.h"

#define N 8192

static uint64_t state = 0x853c49e6748fea9bULL;

// 24-bit uniform in [0, 1): exact in f32.
static float uniform(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)(uint32_t)(state >> 40) * (1.0f / 16777216.0f);
}

// Roughly Gaussian: sum of four uniforms, centred (f32 operations, left to right).
static float gauss(void) {
    float a = uniform();
    float b = uniform();
    float c = uniform();
    float d = uniform();
    return a + b + c + d - 2.0f;
}

static void make_input(float * x) {
    for (int i = 0; i < N; ++i) {
        int block = i / 256;
        int kind = block % 8;
        float scale = 1.0f + (float)(block / 8);
        float v;
        switch (kind) {
            case 0: v = gauss() * 0.02f; break;
            case 1: { float g = gauss(); v = uniform() < 0.02f ? g * 10.0f : g; break; }
            case 2: v = 0.0f; break;
            case 3: v = 0.75f; break;
            case 4: v = fabsf(gauss()) * 0.05f + 0.01f; break;
            case 5: v = -fabsf(gauss()) * 3.0f - 1.0f; break;
            case 6: { float g = gauss(); v = uniform() < 0.9f ? 0.0f : g * 0.5f; break; }
            default: { float g = gauss(); v = (i % 256) < 128 ? g * 1e-20f : g * 1e-3f; break; }
        }
        x[i] = v * scale;
    }
}

int main(void) {
    static float x[N];
    static uint8_t y[N * 4];
    make_input(x);
    fwrite(x, sizeof(float), N, stdout);
#define EMIT(fn, type) do { size_t n = ggml_row_size(type, N); fn(x, (void *) y, N); fwrite(y, 1, n, stdout); } while (0)
    EMIT(quantize_row_q4_0_ref, GGML_TYPE_Q4_0);
    EMIT(quantize_row_q4_1_ref, GGML_TYPE_Q4_1);
    EMIT(quantize_row_q5_0_ref, GGML_TYPE_Q5_0);
    EMIT(quantize_row_q5_1_ref, GGML_TYPE_Q5_1);
    EMIT(quantize_row_q8_0_ref, GGML_TYPE_Q8_0);
    EMIT(quantize_row_q2_K_ref, GGML_TYPE_Q2_K);
    EMIT(quantize_row_q3_K_ref, GGML_TYPE_Q3_K);
    EMIT(quantize_row_q4_K_ref, GGML_TYPE_Q4_K);
    EMIT(quantize_row_q5_K_ref, GGML_TYPE_Q5_K);
    EMIT(quantize_row_q6_K_ref, GGML_TYPE_Q6_K);
    return 0;
}
