/*
 * threads.c: the thread-safety contract of ghostcore.h.
 *  1. One model shared by contexts on several threads at once: each thread makes its own
 *     context and generates greedily from the same prompt; all texts must be equal and
 *     non-empty.
 *  2. One context is one-thread-at-a-time: while thread A is inside gc_generate on a
 *     context, calls on that context from thread B fail with GC_ERR_INVALID_ARG (no data
 *     race, no deadlock), and gc_last_error() is per thread.
 *
 *   threads MODEL.gguf
 * Exits 0 on success, 1 on failure.
 */
#include "ghostcore.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define N_THREADS 3
#define TEXT_CAP 4096

static const char *prompt = "The capital of France is";
static gc_model *model;
static int n_failed = 0;

struct worker {
    pthread_t thread;
    gc_status status;
    char text[TEXT_CAP];
    size_t len;
};

static bool append_piece(const char *piece, size_t len, gc_token token, void *user_data) {
    struct worker *w = user_data;
    (void)token;
    if (w->len + len < TEXT_CAP) {
        memcpy(w->text + w->len, piece, len);
        w->len += len;
    }
    return true;
}

static void *generate_on_own_context(void *arg) {
    struct worker *w = arg;
    gc_ctx *ctx = NULL;
    gc_ctx_params cp = gc_ctx_default_params();
    gc_generate_params gp = gc_generate_default_params();
    cp.n_threads = 1;
    cp.n_ctx = 256;
    gp.temperature = 0.0f;
    gp.max_tokens = 8;
    w->status = gc_ctx_new(model, &cp, &ctx);
    if (w->status == GC_OK) {
        w->status = gc_generate(ctx, prompt, &gp, append_piece, w, NULL);
        if (w->status != GC_OK) {
            fprintf(stderr, "worker: gc_generate: %s\n", gc_last_error());
        }
    }
    gc_ctx_free(ctx);
    return NULL;
}

/* Part 2: a generation that pauses inside its callback until told to go on. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int inside = 0;
static int may_continue = 0;
static gc_ctx *shared_ctx;
static gc_status paused_status;

static bool pause_in_callback(const char *piece, size_t len, gc_token token, void *user_data) {
    (void)piece;
    (void)len;
    (void)token;
    (void)user_data;
    pthread_mutex_lock(&lock);
    inside = 1;
    pthread_cond_broadcast(&cond);
    while (!may_continue) {
        pthread_cond_wait(&cond, &lock);
    }
    pthread_mutex_unlock(&lock);
    return false; /* stop after the first token */
}

static void *paused_generation(void *arg) {
    gc_generate_params gp = gc_generate_default_params();
    (void)arg;
    gp.temperature = 0.0f;
    gp.max_tokens = 4;
    paused_status = gc_generate(shared_ctx, prompt, &gp, pause_in_callback, NULL, NULL);
    return NULL;
}

static void expect(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "FAILED: %s (last error here: %s)\n", what, gc_last_error());
        n_failed++;
    }
}

int main(int argc, char **argv) {
    struct worker workers[N_THREADS];
    pthread_t a;
    gc_token tok = 1;
    gc_status st;
    int i;

    if (argc < 2) {
        fprintf(stderr, "usage: threads MODEL.gguf\n");
        return 1;
    }
    if (gc_model_load(argv[1], NULL, &model) != GC_OK) {
        fprintf(stderr, "gc_model_load: %s\n", gc_last_error());
        return 1;
    }
    st = gc_ctx_new(model, NULL, &shared_ctx);
    expect(st == GC_OK, "gc_ctx_new");
    if (st != GC_OK) {
        gc_model_free(model);
        return 1;
    }

    /* 1. many contexts, one model */
    memset(workers, 0, sizeof workers);
    for (i = 0; i < N_THREADS; i++) {
        pthread_create(&workers[i].thread, NULL, generate_on_own_context, &workers[i]);
    }
    for (i = 0; i < N_THREADS; i++) {
        pthread_join(workers[i].thread, NULL);
        expect(workers[i].status == GC_OK, "generation on a per-thread context");
        expect(workers[i].len > 0, "generated text is non-empty");
        expect(workers[i].len == workers[0].len &&
                   memcmp(workers[i].text, workers[0].text, workers[0].len) == 0,
               "every thread generated the same greedy text");
    }
    printf("threads: %d contexts generated \"%.*s\"\n", N_THREADS, (int)workers[0].len,
           workers[0].text);

    /* 2. one context, two threads */
    pthread_create(&a, NULL, paused_generation, NULL);
    pthread_mutex_lock(&lock);
    while (!inside) {
        pthread_cond_wait(&cond, &lock);
    }
    pthread_mutex_unlock(&lock);
    st = gc_decode(shared_ctx, &tok, 1);
    expect(st == GC_ERR_INVALID_ARG, "gc_decode on a context busy in another thread");
    expect(strstr(gc_last_error(), "in use") != NULL, "the error says the context is in use");
    expect(gc_ctx_reset(shared_ctx) == GC_ERR_INVALID_ARG, "gc_ctx_reset on a busy context");
    pthread_mutex_lock(&lock);
    may_continue = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(a, NULL);
    expect(paused_status == GC_OK, "the paused generation finished normally");
    expect(gc_ctx_reset(shared_ctx) == GC_OK, "the context is usable again");

    gc_ctx_free(shared_ctx);
    gc_model_free(model);
    printf("threads: %s\n", n_failed == 0 ? "all checks passed" : "FAILED");
    return n_failed == 0 ? 0 : 1;
}
