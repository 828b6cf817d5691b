// Session 16: how much DRAM time does reading a random subset of a matrix's rows save?
//
// A decode step's sparse FFN reads the rows of the active neurons of each weight matrix
// (gathered, ascending ids) instead of all rows in order. This measures only the memory side
// of that: each row's bytes are loaded and summed (one add per 32 bytes), so the time is the
// memory system's, not a kernel's. The matrices lie one after another in a 512 MiB buffer
// (far larger than the L3), as a model's layers do, and each pass walks all of them once.
//
// Build and run: gcc -O2 -mavx2 gather_bandwidth.c -o gather_bandwidth && ./gather_bandwidth
// Output: per row size, share of rows read and prefetch distance, the median time of 7
// passes relative to reading every row in order without software prefetch.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned long long rng = 88172645463325252ull;
static unsigned next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

// One pass over every matrix: the listed rows, prefetching `ahead` rows in advance (0: none).
static double pass(const char *buf, size_t mats, size_t row, size_t nr, const unsigned *ids,
                   const size_t *cnt, int ahead, int *sink) {
    double t0 = now();
    __m256i acc = _mm256_setzero_si256();
    for (size_t m = 0; m < mats; m++) {
        const char *base = buf + m * row * nr;
        const unsigned *id = ids + m * nr;
        size_t k = cnt[m];
        for (size_t i = 0; i < k; i++) {
            const char *p = base + (size_t)id[i] * row;
            if (ahead && i + ahead < k) {
                const char *q = base + (size_t)id[i + ahead] * row;
                for (size_t c = 0; c < row; c += 64) _mm_prefetch(q + c, _MM_HINT_T0);
            }
            for (size_t c = 0; c + 32 <= row; c += 32)
                acc = _mm256_add_epi8(acc, _mm256_loadu_si256((const __m256i *)(p + c)));
        }
    }
    double t = now() - t0;
    int r[8];
    _mm256_storeu_si256((__m256i *)r, acc);
    *sink += r[0];
    return t;
}

int main(void) {
    const size_t total = 512u << 20;
    char *buf = aligned_alloc(2u << 20, total);
    memset(buf, 1, total);
    // (row bytes, rows): a Q5_0 row of SmolLM2's 576 inputs (gate/up), a Q6_K-sized
    // neuron-major down row of 576 outputs, and Llama-8B's Q4_K and Q6_K rows of 4096.
    const size_t shapes[][2] = {{396, 1536}, {476, 1536}, {2304, 14336}, {3360, 14336}};
    const double shares[] = {0.2, 0.4, 0.6, 0.8, 1.0};
    const int aheads[] = {0, 4, 8};
    int sink = 0;
    printf("row_bytes rows share prefetch_rows time_vs_all_rows_in_order\n");
    for (size_t s = 0; s < 4; s++) {
        size_t row = shapes[s][0], nr = shapes[s][1], mats = total / (row * nr);
        unsigned *ids = malloc(mats * nr * sizeof *ids);
        size_t *cnt = malloc(mats * sizeof *cnt);
        double base = 0;
        for (size_t si = 5; si-- > 0;) {  // 1.0 first: the baseline
            double share = shares[si];
            for (size_t m = 0; m < mats; m++) {
                size_t k = 0;
                for (size_t r = 0; r < nr; r++)
                    if (share >= 1.0 || (next() % 1000) < share * 1000) ids[m * nr + k++] = (unsigned)r;
                cnt[m] = k;
            }
            for (size_t a = 0; a < 3; a++) {
                if (share >= 1.0 && a > 0) continue;
                double t[7];
                for (int rep = 0; rep < 7; rep++) t[rep] = pass(buf, mats, row, nr, ids, cnt, aheads[a], &sink);
                qsort(t, 7, sizeof t[0], cmp);
                if (share >= 1.0) base = t[3];
                printf("%zu %zu %.1f %d %.3f\n", row, nr, share, aheads[a], t[3] / base);
                fflush(stdout);
            }
        }
        free(ids);
        free(cnt);
    }
    return sink == 42;
}
