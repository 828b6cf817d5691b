/*
 * abi_errors.c: calls every export of libghostcore with NULL and invalid arguments and
 * checks the status codes, gc_last_error() and that out-parameters stay untouched.
 *
 *   abi_errors [MODEL.gguf]
 *
 * With a model, also checks the calls that need a live handle (wrong-kind handles, bad
 * tokens, too-small buffers, bad params values). Prints "abi_errors: N passed, N failed"
 * and exits non-zero on any failure. Written only from the comments in ghostcore.h.
 */
#include "ghostcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_passed = 0;
static int n_failed = 0;

static void check_status(int line, const char *call, gc_status got, gc_status want,
                         const char *msg_part) {
    const char *err = gc_last_error();
    if (err == NULL) {
        fprintf(stderr, "line %d: %s: gc_last_error() returned NULL\n", line, call);
        n_failed++;
        return;
    }
    if (got != want) {
        fprintf(stderr, "line %d: %s returned %s, expected %s (last error: %s)\n", line, call,
                gc_status_name((int32_t)got), gc_status_name((int32_t)want), err);
        n_failed++;
        return;
    }
    if (want != GC_OK && err[0] == '\0') {
        fprintf(stderr, "line %d: %s failed but gc_last_error() is empty\n", line, call);
        n_failed++;
        return;
    }
    if (want != GC_OK && msg_part != NULL && strstr(err, msg_part) == NULL) {
        fprintf(stderr, "line %d: %s: last error \"%s\" does not mention \"%s\"\n", line, call,
                err, msg_part);
        n_failed++;
        return;
    }
    n_passed++;
}

#define EXPECT(call, want) check_status(__LINE__, #call, (call), (want), NULL)
#define EXPECT_MSG(call, want, part) check_status(__LINE__, #call, (call), (want), (part))
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            n_passed++;                                                              \
        } else {                                                                     \
            fprintf(stderr, "line %d: check failed: %s\n", __LINE__, #cond);         \
            n_failed++;                                                              \
        }                                                                            \
    } while (0)

/* Readable memory that is not a GhostCore handle (its leading 8 bytes are not a magic). */
static unsigned long long not_a_handle[8];
#define FAKE(type) ((type *)(void *)not_a_handle)
#define SENTINEL(type) ((type *)(void *)&n_passed)

static bool stop_at_once(const char *piece, size_t len, gc_token token, void *user_data) {
    (void)piece;
    (void)len;
    (void)token;
    (void)user_data;
    return false;
}

static void check_versions_and_names(void) {
    CHECK(gc_abi_version() == GHOSTCORE_ABI_VERSION);
    CHECK(gc_version() != NULL && strlen(gc_version()) >= 5);
    CHECK(strcmp(gc_status_name(GC_OK), "GC_OK") == 0);
    CHECK(strcmp(gc_status_name(GC_ERR_INTERNAL), "GC_ERR_INTERNAL") == 0);
    CHECK(strcmp(gc_status_name(12345), "GC_UNKNOWN_STATUS") == 0);
    CHECK(strcmp(gc_status_name(-1), "GC_UNKNOWN_STATUS") == 0);
    CHECK(GC_OK == 0);
}

static void check_default_params(void) {
    gc_model_params mp = gc_model_default_params();
    gc_ctx_params cp = gc_ctx_default_params();
    gc_generate_params gp = gc_generate_default_params();
    gc_sparsity_params sp = gc_sparsity_default_params();
    gc_calibrate_params kp = gc_calibrate_default_params();
    CHECK(mp.struct_size == sizeof mp && !mp.use_gpu);
    CHECK(cp.struct_size == sizeof cp && cp.n_ctx == 0);
    CHECK(gp.struct_size == sizeof gp && gp.max_tokens > 0 && gp.add_special);
    CHECK(sp.struct_size == sizeof sp && sp.mode == GC_SPARSITY_DENSE);
    CHECK(kp.struct_size == sizeof kp && kp.n_ctx > 0 && !kp.measure_budgets);
    CHECK(sp.spec == NULL);
}

static void check_without_model(const char *tmpdir) {
    gc_model *model = SENTINEL(gc_model);
    gc_ctx *ctx = SENTINEL(gc_ctx);
    gc_mask *mask = SENTINEL(gc_mask);
    gc_model_params mp = gc_model_default_params();
    gc_model_info info;
    gc_generate_stats stats;
    gc_token tokens[4] = {1, 2, 3, 4};
    char buf[16];
    float logits[4];
    size_t n = 77;
    const char *texts[2] = {"hello", NULL};
    char bad_gguf[512];
    FILE *f;

    /* gc_model_load */
    EXPECT_MSG(gc_model_load(NULL, NULL, &model), GC_ERR_INVALID_ARG, "path");
    EXPECT_MSG(gc_model_load("x.gguf", NULL, NULL), GC_ERR_INVALID_ARG, "out_model");
    EXPECT(gc_model_load("", NULL, &model), GC_ERR_INVALID_ARG);
    EXPECT_MSG(gc_model_load("/nonexistent/dir/model.gguf", NULL, &model), GC_ERR_IO,
               "/nonexistent/dir/model.gguf");
    EXPECT(gc_model_load("\xff\xfe", NULL, &model), GC_ERR_INVALID_ARG);
    mp.struct_size = 4;
    EXPECT_MSG(gc_model_load("x.gguf", &mp, &model), GC_ERR_INVALID_ARG, "struct_size");
    mp.struct_size = 0;
    EXPECT(gc_model_load("x.gguf", &mp, &model), GC_ERR_INVALID_ARG);
    {
        /* A struct from a newer header: larger struct_size is accepted (the load then
         * fails on the missing file, not on the params). */
        struct {
            gc_model_params p;
            unsigned char newer_fields[32];
        } newer;
        memset(&newer, 0, sizeof newer);
        newer.p = gc_model_default_params();
        newer.p.struct_size = (uint32_t)sizeof newer;
        EXPECT(gc_model_load("/nonexistent/model.gguf", &newer.p, &model), GC_ERR_IO);
    }
    snprintf(bad_gguf, sizeof bad_gguf, "%s/not_a_model.gguf", tmpdir);
    f = fopen(bad_gguf, "wb");
    if (f != NULL) {
        fputs("this is not a GGUF file, just text long enough to be read", f);
        fclose(f);
        EXPECT_MSG(gc_model_load(bad_gguf, NULL, &model), GC_ERR_FORMAT, "GGUF");
        remove(bad_gguf);
    } else {
        fprintf(stderr, "cannot write %s\n", bad_gguf);
        n_failed++;
    }
    CHECK(model == SENTINEL(gc_model)); /* out-parameter untouched on failure */

    /* frees: NULL is a no-op; a non-handle is rejected (and not freed) */
    gc_model_free(NULL);
    gc_ctx_free(NULL);
    gc_mask_free(NULL);
    gc_model_free(FAKE(gc_model));
    gc_ctx_free(FAKE(gc_ctx));
    gc_mask_free(FAKE(gc_mask));
    n_passed++;

    /* gc_model_get_info */
    info.struct_size = sizeof info;
    EXPECT_MSG(gc_model_get_info(NULL, &info), GC_ERR_INVALID_ARG, "model");
    EXPECT_MSG(gc_model_get_info(FAKE(gc_model), &info), GC_ERR_INVALID_ARG, "gc_model");

    /* gc_ctx_new / reset / decode / logits */
    EXPECT(gc_ctx_new(NULL, NULL, &ctx), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_new(FAKE(gc_model), NULL, &ctx), GC_ERR_INVALID_ARG);
    CHECK(ctx == SENTINEL(gc_ctx));
    EXPECT(gc_ctx_reset(NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_reset(FAKE(gc_ctx)), GC_ERR_INVALID_ARG);
    EXPECT(gc_decode(NULL, tokens, 4), GC_ERR_INVALID_ARG);
    EXPECT(gc_decode(FAKE(gc_ctx), tokens, 4), GC_ERR_INVALID_ARG);
    EXPECT(gc_get_logits(NULL, logits, 4, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_get_logits(FAKE(gc_ctx), logits, 4, &n), GC_ERR_INVALID_ARG);
    CHECK(n == 77);

    /* tokenizer */
    EXPECT(gc_tokenize(NULL, "hi", 2, true, false, tokens, 4, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_tokenize(FAKE(gc_model), "hi", 2, true, false, tokens, 4, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_token_to_piece(NULL, 1, false, buf, sizeof buf, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_detokenize(NULL, tokens, 4, false, buf, sizeof buf, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_detokenize(FAKE(gc_model), tokens, 4, false, buf, sizeof buf, &n),
           GC_ERR_INVALID_ARG);

    /* generation */
    stats.struct_size = sizeof stats;
    EXPECT(gc_generate(NULL, "hi", NULL, stop_at_once, NULL, &stats), GC_ERR_INVALID_ARG);
    EXPECT(gc_generate(FAKE(gc_ctx), "hi", NULL, NULL, NULL, NULL), GC_ERR_INVALID_ARG);

    /* sparsity */
    EXPECT(gc_mask_calibrate(NULL, texts, 1, NULL, &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_calibrate(FAKE(gc_model), texts, 1, NULL, &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_load(NULL, "m.ghost", &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_save(NULL, "m.ghost"), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_save(FAKE(gc_mask), "m.ghost"), GC_ERR_INVALID_ARG);
    CHECK(mask == SENTINEL(gc_mask));
    EXPECT(gc_ctx_set_mask(NULL, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_set_mask(FAKE(gc_ctx), NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_set_sparsity(NULL, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_set_sparsity(FAKE(gc_ctx), NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_tune_path_costs(NULL, false, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_tune_path_costs(FAKE(gc_ctx), true, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_sparse_check(NULL, NULL, NULL, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_ctx_sparse_check(FAKE(gc_ctx), NULL, NULL, NULL), GC_ERR_INVALID_ARG);
}

/* Checks that need a live model (and a context, once this build has a forward pass). */
static void check_with_model(const char *path) {
    gc_model *model = NULL;
    gc_ctx *ctx = NULL;
    gc_mask *mask = SENTINEL(gc_mask);
    gc_model_info info;
    gc_token tokens[4] = {1, 2, 3, 4};
    gc_token bad_tokens[2] = {1, -5};
    gc_token out_tokens[1];
    char buf[4];
    size_t n = 0;
    const char *texts[2] = {"The quick brown fox.", NULL};
    gc_calibrate_params kp = gc_calibrate_default_params();
    gc_ctx_params cp = gc_ctx_default_params();
    gc_generate_params gp = gc_generate_default_params();
    gc_sparsity_params sp = gc_sparsity_default_params();
    gc_status st;

    EXPECT(gc_model_load(path, NULL, &model), GC_OK);
    if (model == NULL) {
        return;
    }

    /* info: struct_size must be set; too small is rejected */
    info.struct_size = 4;
    EXPECT_MSG(gc_model_get_info(model, &info), GC_ERR_INVALID_ARG, "struct_size");
    EXPECT(gc_model_get_info(model, NULL), GC_ERR_INVALID_ARG);
    info.struct_size = sizeof info;
    EXPECT(gc_model_get_info(model, &info), GC_OK);
    CHECK(info.struct_size == sizeof info);
    CHECK(info.architecture != NULL && info.architecture[0] != '\0');
    CHECK(info.n_vocab > 0 && info.n_params > 0 && info.n_ctx_train > 0);

    /* wrong kind of handle */
    EXPECT_MSG(gc_ctx_reset((gc_ctx *)(void *)model), GC_ERR_INVALID_ARG, "gc_ctx");
    EXPECT_MSG(gc_mask_save((gc_mask *)(void *)model, "x"), GC_ERR_INVALID_ARG, "gc_mask");

    /* tokenizer arguments */
    EXPECT(gc_tokenize(model, NULL, 3, true, false, out_tokens, 1, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_tokenize(model, "abc", 3, true, false, out_tokens, 1, NULL), GC_ERR_INVALID_ARG);
    EXPECT_MSG(gc_tokenize(model, "\xff\xfe", 2, true, false, out_tokens, 1, &n),
               GC_ERR_INVALID_ARG, "UTF-8");
    EXPECT_MSG(gc_token_to_piece(model, -1, false, buf, sizeof buf, &n), GC_ERR_INVALID_ARG,
               "negative");
    EXPECT_MSG(gc_token_to_piece(model, (gc_token)info.n_vocab, false, buf, sizeof buf, &n),
               GC_ERR_INVALID_ARG, "out of range");
    EXPECT(gc_token_to_piece(model, 1, false, buf, sizeof buf, NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_detokenize(model, NULL, 2, false, buf, sizeof buf, &n), GC_ERR_INVALID_ARG);
    EXPECT(gc_detokenize(model, bad_tokens, 2, false, buf, sizeof buf, &n), GC_ERR_INVALID_ARG);
    /* too small: size reported, buffer untouched */
    out_tokens[0] = -77;
    EXPECT(gc_tokenize(model, "Hello world, this is a longer text.", 35, true, false, out_tokens,
                       1, &n),
           GC_ERR_BUFFER_TOO_SMALL);
    CHECK(n > 1 && out_tokens[0] == -77);
    n = 0;
    EXPECT(gc_detokenize(model, tokens, 4, false, NULL, 0, &n), GC_ERR_BUFFER_TOO_SMALL);
    CHECK(n > 0);
    buf[0] = 'z';
    EXPECT(gc_token_to_piece(model, 504, true, buf, 1, &n), GC_ERR_BUFFER_TOO_SMALL);
    CHECK(buf[0] == 'z' && n > 0);

    /* sparsity with a model: argument errors (tests/c/sparsity.c runs the real thing) */
    EXPECT(gc_mask_calibrate(model, NULL, 1, NULL, &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_calibrate(model, texts, 0, NULL, &mask), GC_ERR_INVALID_ARG);
    EXPECT_MSG(gc_mask_calibrate(model, texts, 2, NULL, &mask), GC_ERR_INVALID_ARG, "texts[1]");
    EXPECT(gc_mask_calibrate(model, texts, 1, NULL, NULL), GC_ERR_INVALID_ARG);
    EXPECT_MSG(gc_mask_calibrate(model, texts, 1, NULL, &mask), GC_ERR_INVALID_ARG,
               "calibration chunk"); /* far too little text for one chunk */
    kp.n_ctx = 4;
    EXPECT_MSG(gc_mask_calibrate(model, texts, 1, &kp, &mask), GC_ERR_INVALID_ARG, "n_ctx");
    kp = gc_calibrate_default_params();
    kp.eps = -1.0f;
    EXPECT(gc_mask_calibrate(model, texts, 1, &kp, &mask), GC_ERR_INVALID_ARG);
    kp = gc_calibrate_default_params();
    kp.struct_size = 3;
    EXPECT(gc_mask_calibrate(model, texts, 1, &kp, &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_load(model, NULL, &mask), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_load(model, "x.ghost", NULL), GC_ERR_INVALID_ARG);
    EXPECT(gc_mask_load(model, "/nonexistent/x.ghost", &mask), GC_ERR_IO);
    EXPECT(gc_mask_load(model, path, &mask), GC_ERR_FORMAT); /* a model is not a mask */
    CHECK(mask == SENTINEL(gc_mask));
    mask = NULL;

    /* context params */
    cp.struct_size = 8;
    EXPECT(gc_ctx_new(model, &cp, &ctx), GC_ERR_INVALID_ARG);
    cp = gc_ctx_default_params();
    EXPECT(gc_ctx_new(model, &cp, NULL), GC_ERR_INVALID_ARG);
    st = gc_ctx_new(model, &cp, &ctx);
    EXPECT(st, GC_OK);
    if (st == GC_OK) {
        size_t n_logits = 0;
        gc_generate_stats stats;
        EXPECT(gc_get_logits(ctx, NULL, 0, &n_logits), GC_ERR_INVALID_ARG); /* nothing decoded */
        EXPECT(gc_decode(ctx, NULL, 2), GC_ERR_INVALID_ARG);
        EXPECT(gc_decode(ctx, tokens, 0), GC_ERR_INVALID_ARG);
        EXPECT(gc_decode(ctx, bad_tokens, 2), GC_ERR_INVALID_ARG);
        bad_tokens[1] = (gc_token)info.n_vocab;
        EXPECT(gc_decode(ctx, bad_tokens, 2), GC_ERR_INVALID_ARG);
        EXPECT(gc_decode(ctx, tokens, 1), GC_OK);
        EXPECT(gc_get_logits(ctx, NULL, 0, &n_logits), GC_ERR_BUFFER_TOO_SMALL);
        CHECK(n_logits == info.n_vocab);
        EXPECT(gc_get_logits(ctx, NULL, 0, NULL), GC_ERR_INVALID_ARG);
        EXPECT(gc_ctx_reset(ctx), GC_OK);
        gp.max_tokens = 0;
        EXPECT_MSG(gc_generate(ctx, "hi", &gp, NULL, NULL, NULL), GC_ERR_INVALID_ARG,
                   "max_tokens");
        gp = gc_generate_default_params();
        gp.top_p = 2.0f;
        EXPECT(gc_generate(ctx, "hi", &gp, NULL, NULL, NULL), GC_ERR_INVALID_ARG);
        gp = gc_generate_default_params();
        EXPECT(gc_generate(ctx, NULL, &gp, NULL, NULL, NULL), GC_ERR_INVALID_ARG);
        stats.struct_size = 2;
        EXPECT(gc_generate(ctx, "hi", &gp, NULL, NULL, &stats), GC_ERR_INVALID_ARG);
        stats.struct_size = sizeof stats;
        gp.max_tokens = 4;
        EXPECT(gc_generate(ctx, "Hello", &gp, stop_at_once, NULL, &stats), GC_OK);
        CHECK(stats.stop_reason == GC_STOP_CALLBACK && stats.n_generated_tokens == 1);
        sp.mode = 99;
        EXPECT_MSG(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG, "mode");
        sp.mode = GC_SPARSITY_TARGET;
        sp.target_sparsity = -0.5f;
        EXPECT(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG);
        sp.target_sparsity = 0.3f;
        EXPECT_MSG(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG, "gc_ctx_set_mask");
        sp.mode = GC_SPARSITY_THRESHOLD;
        sp.threshold = -1.0f;
        EXPECT(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG);
        sp.mode = GC_SPARSITY_SPEC;
        sp.spec = NULL;
        EXPECT_MSG(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG, "spec");
        sp.spec = "no-such-mode:1";
        EXPECT(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG);
        sp.spec = "budget:1";
        EXPECT(gc_ctx_set_sparsity(ctx, &sp), GC_ERR_INVALID_ARG); /* needs a mask */
        sp = gc_sparsity_default_params();
        EXPECT(gc_ctx_set_sparsity(ctx, &sp), GC_OK);
        EXPECT(gc_ctx_set_sparsity(ctx, NULL), GC_OK);
        /* the path-cost check decodes with the context's sparsity: a dense one is refused */
        EXPECT_MSG(gc_ctx_tune_path_costs(ctx, false, NULL), GC_ERR_INVALID_ARG, "dense");
        EXPECT_MSG(gc_ctx_sparse_check(ctx, NULL, NULL, NULL), GC_ERR_INVALID_ARG, "dense");
        EXPECT(gc_ctx_set_mask(ctx, NULL), GC_OK);
        EXPECT(gc_ctx_set_mask(ctx, FAKE(gc_mask)), GC_ERR_INVALID_ARG);
        /* the context keeps the model alive */
        gc_model_free(model);
        model = NULL;
        EXPECT(gc_ctx_reset(ctx), GC_OK);
        EXPECT(gc_decode(ctx, tokens, 2), GC_OK);
        gc_ctx_free(ctx);
    }
    gc_mask_free(mask);
    gc_model_free(model);
}

int main(int argc, char **argv) {
    const char *tmpdir = getenv("TMPDIR");
    if (tmpdir == NULL || tmpdir[0] == '\0') {
        tmpdir = "/tmp";
    }
    CHECK(gc_last_error() != NULL && gc_last_error()[0] == '\0'); /* nothing failed yet */
    check_versions_and_names();
    check_default_params();
    check_without_model(tmpdir);
    if (argc > 1) {
        check_with_model(argv[1]);
    } else {
        printf("abi_errors: no model given; checks needing a live model skipped\n");
    }
    printf("abi_errors: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
