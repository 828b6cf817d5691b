/*
 * sparsity.c: the sparsity functions of ghostcore.h end to end on a real model.
 *  - gc_mask_calibrate over a corpus, gc_mask_save, gc_mask_load;
 *  - dense generation reports sparsity 0; a calibrated target mode skips about the
 *    requested share; a global threshold needs no mask; removing the mask restores the
 *    exact dense text;
 *  - a saved-and-loaded mask generates exactly what the original does;
 *  - a context keeps its mask alive after gc_mask_free;
 *  - a mask is refused by a model with other weights (when a second model is given);
 *  - gc_ctx_tune_path_costs measures and checks the path costs in decode, and
 *    gc_ctx_sparse_check then reports the sparse-against-dense verdict (under the
 *    XDG_CACHE_HOME the runner points to a scratch folder), and the context generates after.
 *
 *   sparsity MODEL.gguf CORPUS.txt TMPDIR [OTHER_MODEL.gguf]
 * Prints "sparsity: N passed, N failed".
 */
#include "ghostcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEXT_CAP 4096
#define CORPUS_BYTES 4500

static int n_passed = 0;
static int n_failed = 0;

static void check(int cond, const char *what) {
    if (cond) {
        n_passed++;
    } else {
        n_failed++;
        fprintf(stderr, "FAILED: %s (last error: %s)\n", what, gc_last_error());
    }
}

struct text {
    char bytes[TEXT_CAP];
    size_t len;
};

static bool append(const char *piece, size_t len, gc_token token, void *user_data) {
    struct text *t = user_data;
    (void)token;
    if (t->len + len < TEXT_CAP) {
        memcpy(t->bytes + t->len, piece, len);
        t->len += len;
    }
    return true;
}

/* Greedy generation from a fresh sequence; returns the stats' sparsity (-1 on failure). */
static float generate(gc_ctx *ctx, struct text *out) {
    gc_generate_params gp = gc_generate_default_params();
    gc_generate_stats stats;
    gp.temperature = 0.0f;
    gp.max_tokens = 16;
    gp.stop_at_eog = false;
    stats.struct_size = sizeof stats;
    out->len = 0;
    if (gc_ctx_reset(ctx) != GC_OK ||
        gc_generate(ctx, "The capital of France is", &gp, append, out, &stats) != GC_OK) {
        return -1.0f;
    }
    return stats.sparsity;
}

static double seconds(void) {
    return (double)clock() / CLOCKS_PER_SEC;
}

static int same(const struct text *a, const struct text *b) {
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

static gc_status set_mode(gc_ctx *ctx, uint32_t mode, float value) {
    gc_sparsity_params sp = gc_sparsity_default_params();
    sp.mode = mode;
    sp.threshold = value;
    sp.target_sparsity = value;
    return gc_ctx_set_sparsity(ctx, &sp);
}

int main(int argc, char **argv) {
    static char corpus[CORPUS_BYTES + 1];
    const char *texts[2];
    char mask_path[1024];
    gc_model *model = NULL;
    gc_mask *mask = NULL, *loaded = NULL;
    gc_ctx *ctx = NULL, *ctx2 = NULL, *ctx3 = NULL;
    gc_calibrate_params kp = gc_calibrate_default_params();
    struct text dense, target, target_loaded, text;
    float s;
    size_t n, half;
    FILE *f;

    if (argc < 4) {
        fprintf(stderr, "usage: sparsity MODEL.gguf CORPUS.txt TMPDIR [OTHER_MODEL.gguf]\n");
        return 1;
    }
    f = fopen(argv[2], "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    n = fread(corpus, 1, CORPUS_BYTES, f);
    fclose(f);
    while (n > 0 && corpus[n - 1] != '\n') { /* end on a line: whole UTF-8 sequences */
        n--;
    }
    corpus[n] = '\0';
    half = n / 2;
    while (half < n && corpus[half] != '\n') {
        half++;
    }
    /* two texts: the first half (copied) and the rest */
    texts[1] = corpus + half;
    {
        static char first[CORPUS_BYTES + 1];
        memcpy(first, corpus, half);
        first[half] = '\0';
        texts[0] = first;
    }
    snprintf(mask_path, sizeof mask_path, "%s/sparsity_test.ghost", argv[3]);

    check(gc_model_load(argv[1], NULL, &model) == GC_OK, "load model");
    if (model == NULL) {
        return 1;
    }
    kp.n_ctx = 256;
    s = (float)seconds();
    check(gc_mask_calibrate(model, texts, 2, &kp, &mask) == GC_OK, "gc_mask_calibrate");
    printf("sparsity: calibration took %.1f s of CPU\n", seconds() - s);
    if (mask == NULL) {
        gc_model_free(model);
        printf("sparsity: %d passed, %d failed\n", n_passed, n_failed);
        return 1;
    }
    check(gc_mask_save(mask, mask_path) == GC_OK, "gc_mask_save");
    check(gc_mask_load(model, mask_path, &loaded) == GC_OK, "gc_mask_load of the saved mask");

    check(gc_ctx_new(model, NULL, &ctx) == GC_OK, "gc_ctx_new");
    s = generate(ctx, &dense);
    check(s == 0.0f && dense.len > 0, "dense generation reports sparsity 0");

    check(gc_ctx_set_mask(ctx, mask) == GC_OK, "gc_ctx_set_mask");
    s = generate(ctx, &text);
    check(s >= 0.0f && text.len > 0, "generation with the mask's default mode (dead neurons)");

    check(set_mode(ctx, GC_SPARSITY_TARGET, 0.3f) == GC_OK, "target 0.3 with a mask");
    s = generate(ctx, &target);
    printf("sparsity: target 0.3 achieved %.3f: \"%.*s\"\n", s, (int)target.len, target.bytes);
    check(s > 0.15f && s < 0.45f, "target 0.3 skips about 30% of the neurons");
    check(target.len > 0, "target 0.3 generates text");

    check(gc_ctx_new(model, NULL, &ctx2) == GC_OK && gc_ctx_set_mask(ctx2, loaded) == GC_OK &&
              set_mode(ctx2, GC_SPARSITY_TARGET, 0.3f) == GC_OK,
          "second context with the loaded mask");
    generate(ctx2, &target_loaded);
    check(same(&target, &target_loaded), "the saved-and-loaded mask generates the same text");

    gc_mask_free(mask); /* ctx keeps its own reference */
    mask = NULL;
    s = generate(ctx, &text);
    check(same(&text, &target), "the context still uses the mask after gc_mask_free");

    check(gc_ctx_new(model, NULL, &ctx3) == GC_OK &&
              set_mode(ctx3, GC_SPARSITY_THRESHOLD, 0.05f) == GC_OK,
          "a global threshold needs no mask");
    s = generate(ctx3, &text);
    printf("sparsity: threshold 0.05 achieved %.3f\n", s);
    check(s > 0.0f && text.len > 0, "the threshold mode skips neurons");

    {
        double speedup = 0.0;
        gc_status st = gc_ctx_tune_path_costs(ctx3, false, &speedup);
        if (st == GC_ERR_UNSUPPORTED) {
            printf("sparsity: path-cost tuning skipped: %s\n", gc_last_error());
        } else {
            printf("sparsity: measured path costs decode at %.3fx the built-in ones' speed\n",
                   speedup);
            check(st == GC_OK && speedup > 0.2 && speedup < 5.0,
                  "gc_ctx_tune_path_costs measures and checks in decode");
            {
                bool checked = false, dense_faster = true;
                double sparse_speedup = 0.0;
                check(gc_ctx_sparse_check(ctx3, &checked, &sparse_speedup, &dense_faster) ==
                          GC_OK,
                      "gc_ctx_sparse_check reads the tune's verdict");
                printf("sparsity: the tuned sparse FFN decoded at %.3fx the dense speed%s\n",
                       sparse_speedup, dense_faster ? " (dense significantly faster)" : "");
                check(checked && sparse_speedup > 0.2 && sparse_speedup < 5.0,
                      "the tune checked the sparse FFN against the dense one");
            }
            s = generate(ctx3, &text);
            check(s > 0.0f && text.len > 0, "the tuned context still generates sparsely");
            check(gc_ctx_tune_path_costs(ctx3, false, NULL) == GC_OK,
                  "a second call reads the cached costs and checks again");
        }
    }

    check(gc_ctx_set_mask(ctx, NULL) == GC_OK, "removing the mask");
    s = generate(ctx, &text);
    check(s == 0.0f && same(&text, &dense), "without the mask the dense text comes back");

    if (argc > 4) {
        gc_model *other = NULL;
        gc_ctx *other_ctx = NULL;
        gc_mask *wrong = NULL;
        check(gc_model_load(argv[4], NULL, &other) == GC_OK, "load the other model");
        check(gc_mask_load(other, mask_path, &wrong) == GC_ERR_INVALID_ARG && wrong == NULL,
              "a mask is refused by a model with other weights (load)");
        check(gc_ctx_new(other, NULL, &other_ctx) == GC_OK &&
                  gc_ctx_set_mask(other_ctx, loaded) == GC_ERR_INVALID_ARG,
              "a mask is refused by a model with other weights (set)");
        gc_ctx_free(other_ctx);
        gc_model_free(other);
    }

    gc_ctx_free(ctx);
    gc_ctx_free(ctx2);
    gc_ctx_free(ctx3);
    gc_mask_free(loaded);
    gc_model_free(model);
    remove(mask_path);
    printf("sparsity: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
