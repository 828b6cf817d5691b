/*
 * simple.c: the minimal GhostCore program, after llama.cpp's examples/simple.
 * Loads a GGUF model, tokenizes a prompt, generates greedily and prints the text.
 *
 *   simple [-m MODEL.gguf] [-n N_PREDICT] [--mask MASK.ghost] [--sparsity SPEC] [PROMPT]
 *
 * --mask loads a sparsity mask (from `ghost calibrate` or gc_mask_save) and sets it on the
 * context; --sparsity picks a mode in the `ghost --sparsity` language (e.g. "gate:0.05",
 * "target:0.3" with a mask, "budget:1").
 *
 * Without -m it looks for models/smollm2-135m-q4_k_m.gguf, then
 * ../shared/models/smollm2-135m-q4_k_m.gguf. Build:
 *   cc -std=c99 simple.c $(pkg-config --cflags --libs ghostcore) -o simple
 */
#include "ghostcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MODEL "smollm2-135m-q4_k_m.gguf"

static int fail(const char *what, gc_status status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, gc_status_name(status), gc_last_error());
    return 1;
}

/* Streams each generated piece to stdout; returning true asks for more. */
static bool print_piece(const char *piece, size_t len, gc_token token, void *user_data) {
    (void)token;
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static const char *find_model(void) {
    static const char *candidates[] = {"models/" DEFAULT_MODEL, "../shared/models/" DEFAULT_MODEL};
    size_t i;
    for (i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        FILE *f = fopen(candidates[i], "rb");
        if (f != NULL) {
            fclose(f);
            return candidates[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *model_path = NULL;
    const char *mask_path = NULL;
    const char *sparsity = NULL;
    gc_mask *mask = NULL;
    const char *prompt = "Hello my name is";
    int n_predict = 32;
    int i;
    gc_status st;
    gc_model *model = NULL;
    gc_ctx *ctx = NULL;
    gc_model_info info;
    gc_token *tokens = NULL;
    size_t n_tokens = 0;
    gc_generate_params gp;
    gc_generate_stats stats;
    int rc = 1;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            model_path = argv[++i];
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            n_predict = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--mask") == 0 && i + 1 < argc) {
            mask_path = argv[++i];
        } else if (strcmp(argv[i], "--sparsity") == 0 && i + 1 < argc) {
            sparsity = argv[++i];
        } else {
            prompt = argv[i];
        }
    }
    if (model_path == NULL && (model_path = find_model()) == NULL) {
        fprintf(stderr, "usage: %s [-m MODEL.gguf] [-n N_PREDICT] [--mask MASK.ghost] "
                        "[--sparsity SPEC] [PROMPT]\n"
                        "(no -m given and " DEFAULT_MODEL " not found in models/ or "
                        "../shared/models/)\n", argv[0]);
        return 1;
    }
    if (n_predict <= 0) {
        fprintf(stderr, "-n must be positive\n");
        return 1;
    }
    if (gc_abi_version() != GHOSTCORE_ABI_VERSION) {
        fprintf(stderr, "libghostcore ABI %u, header ABI %u: rebuild against the library\n",
                gc_abi_version(), (unsigned)GHOSTCORE_ABI_VERSION);
        return 1;
    }

    st = gc_model_load(model_path, NULL, &model);
    if (st != GC_OK) {
        return fail("gc_model_load", st);
    }
    info.struct_size = sizeof info;
    st = gc_model_get_info(model, &info);
    if (st != GC_OK) {
        fail("gc_model_get_info", st);
        goto out;
    }
    fprintf(stderr, "model: %s (%s), %llu parameters, vocabulary %u\n", info.name,
            info.architecture, (unsigned long long)info.n_params, info.n_vocab);

    /* Tokenize: first ask for the size, then fill. */
    st = gc_tokenize(model, prompt, strlen(prompt), true, true, NULL, 0, &n_tokens);
    if (st != GC_ERR_BUFFER_TOO_SMALL && st != GC_OK) {
        fail("gc_tokenize", st);
        goto out;
    }
    tokens = malloc((n_tokens ? n_tokens : 1) * sizeof *tokens);
    if (tokens == NULL) {
        goto out;
    }
    st = gc_tokenize(model, prompt, strlen(prompt), true, true, tokens, n_tokens, &n_tokens);
    if (st != GC_OK) {
        fail("gc_tokenize", st);
        goto out;
    }
    fprintf(stderr, "prompt: %zu tokens\n", n_tokens);

    st = gc_ctx_new(model, NULL, &ctx);
    if (st != GC_OK) {
        fail("gc_ctx_new", st);
        goto out;
    }

    if (mask_path != NULL) {
        st = gc_mask_load(model, mask_path, &mask);
        if (st == GC_OK) {
            st = gc_ctx_set_mask(ctx, mask); /* the context keeps its own reference */
        }
        if (st != GC_OK) {
            fail("loading the mask", st);
            goto out;
        }
    }
    if (sparsity != NULL) {
        gc_sparsity_params sp = gc_sparsity_default_params();
        sp.mode = GC_SPARSITY_SPEC;
        sp.spec = sparsity;
        st = gc_ctx_set_sparsity(ctx, &sp);
        if (st != GC_OK) {
            fail("gc_ctx_set_sparsity", st);
            goto out;
        }
    }

    gp = gc_generate_default_params();
    gp.max_tokens = (uint32_t)n_predict;
    gp.temperature = 0.0f; /* greedy, like llama.cpp's simple */
    stats.struct_size = sizeof stats;
    printf("%s", prompt);
    st = gc_generate(ctx, prompt, &gp, print_piece, NULL, &stats);
    printf("\n");
    if (st != GC_OK) {
        fail("gc_generate", st);
        goto out;
    }
    fprintf(stderr,
            "prompt: %u tokens, %.1f tok/s; generated: %u tokens, %.1f tok/s; "
            "FFN sparsity %.1f%%\n",
            stats.n_prompt_tokens, stats.prompt_tokens_per_second, stats.n_generated_tokens,
            stats.generate_tokens_per_second, 100.0 * stats.sparsity);
    rc = 0;

out:
    free(tokens);
    gc_mask_free(mask);
    gc_ctx_free(ctx);
    gc_model_free(model);
    return rc;
}
