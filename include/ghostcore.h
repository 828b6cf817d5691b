/*
 * ghostcore.h: the C API of GhostCore, a GGUF LLM inference engine with FFN activation
 * sparsity. Generated from the Rust sources (ffi/) by cbindgen: do not edit by hand.
 *
 * LINKING
 *   pkg-config --cflags --libs ghostcore      (shared: libghostcore.so.<ABI>)
 *   pkg-config --static --libs ghostcore      (static: libghostcore.a)
 *   At start-up, check gc_abi_version() == GHOSTCORE_ABI_VERSION and refuse to run
 *   otherwise.
 *
 * ERRORS
 *   Every fallible function returns gc_status: GC_OK (0) on success, a GC_ERR_* code
 *   otherwise. gc_last_error() then returns a human-readable message describing the
 *   failure; it is per thread and stays valid until the next failing call on that thread.
 *   Out-parameters (`out_*`, info/stats structs) are written only on success. NULL or
 *   invalid arguments give GC_ERR_INVALID_ARG, never a crash (handles are checked for
 *   NULL and, best effort, for being a live handle of the right kind). An internal bug
 *   (a caught Rust panic) gives GC_ERR_INTERNAL; the library never unwinds into C.
 *
 * HANDLES AND OWNERSHIP
 *   gc_model, gc_ctx and gc_mask are opaque. Create them with gc_model_load, gc_ctx_new,
 *   gc_mask_calibrate / gc_mask_load; release each exactly once with the matching
 *   *_free function. Freeing NULL is a no-op. A context keeps its model alive and a
 *   context keeps the mask set on it alive, so handles may be freed in any order.
 *   Strings the library returns are owned by the library (see each function for how
 *   long they live); strings and arrays you pass are only read during the call.
 *
 * THREADS
 *   gc_model: immutable once loaded (a reference-counted Arc<Model> inside). Any number
 *     of threads may use one model at once, e.g. one context per thread.
 *   gc_ctx: one thread at a time (it owns the KV cache). A second concurrent call on the
 *     same context is rejected with GC_ERR_INVALID_ARG; contexts may move between threads.
 *   gc_mask: immutable; share it freely.
 *   gc_last_error: per thread.
 *
 * BUFFERS
 *   Functions that fill caller buffers (gc_tokenize, gc_token_to_piece, gc_detokenize,
 *   gc_get_logits) take the buffer, its capacity in elements and a size_t out-parameter
 *   that always receives the full result length. If the result does not fit they return
 *   GC_ERR_BUFFER_TOO_SMALL and leave the buffer untouched: allocate and call again.
 *   Text results are NUL-terminated and need length + 1 bytes.
 *
 * VERSIONED STRUCTS
 *   Every params/info/stats struct starts with `uint32_t struct_size`. Get params from the
 *   *_default_params() functions (which set it) and change the fields you need; set
 *   struct_size = sizeof(T) yourself on info/stats structs before passing them. A size
 *   smaller than this header's is rejected with GC_ERR_INVALID_ARG; a larger one (from a
 *   newer header) is accepted and only the fields this library knows are used. Params
 *   pointers may be NULL to mean "defaults".
 *
 * MINIMAL PROGRAM (error checks elided; see examples/c/simple.c)
 *   gc_model *model; gc_ctx *ctx;
 *   gc_model_load("model.gguf", NULL, &model);
 *   gc_ctx_new(model, NULL, &ctx);
 *   gc_generate_params gp = gc_generate_default_params();
 *   gp.max_tokens = 32;
 *   gc_generate(ctx, "The capital of France is", &gp, print_piece, NULL, NULL);
 *   gc_ctx_free(ctx); gc_model_free(model);
 *
 * SPARSITY
 *   Decoding can skip FFN neurons whose activation is small. gc_ctx_set_sparsity picks
 *   the rule (a global threshold needs nothing else); calibrated rules need a mask made
 *   by gc_mask_calibrate (or `ghost calibrate`, loaded with gc_mask_load) and set with
 *   gc_ctx_set_mask. gc_generate_stats.sparsity reports what was skipped. Prompt batches
 *   always run dense.
 */

#ifndef GHOSTCORE_H
#define GHOSTCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opaque handles. See HANDLES AND OWNERSHIP and THREADS above. */

/* A loaded model (weights, tokenizer). Thread-safe; an Arc<Model> inside. */
typedef struct gc_model gc_model;
/* An inference context (KV cache, logits, sparsity settings). One thread at a time. */
typedef struct gc_ctx gc_ctx;
/* A calibrated FFN sparsity mask for one model. Immutable, thread-safe. */
typedef struct gc_mask gc_mask;

/**
 * The ABI version this header describes. It changes only when an existing function,
 * struct field or constant changes meaning or layout (appending fields to a params struct
 * does not change it; see struct_size). Compare it with gc_abi_version() at start-up
 * and refuse to run on a mismatch. The shared library's SONAME is
 * libghostcore.so.<GHOSTCORE_ABI_VERSION>.
 */
#define GHOSTCORE_ABI_VERSION 1

/**
 * The result of every fallible call. `GC_OK` is 0; every other value is an error whose
 * detail `gc_last_error()` returns on the same thread.
 */
typedef enum gc_status {
    /**
     * Success.
     */
    GC_OK = 0,
    /**
     * A NULL pointer where one is required, a value out of range, a handle of the wrong
     * kind, a params struct whose struct_size is too small, or a context used from two
     * threads at once.
     */
    GC_ERR_INVALID_ARG = 1,
    /**
     * A file could not be opened, read or written.
     */
    GC_ERR_IO = 2,
    /**
     * A file is malformed (bad GGUF, bad mask file, missing or misshapen tensor).
     */
    GC_ERR_FORMAT = 3,
    /**
     * Well-formed input that this build does not run (architecture, tensor type), or a
     * feature this build does not have yet (see the function's comment).
     */
    GC_ERR_UNSUPPORTED = 4,
    /**
     * An allocation failed (host or device memory).
     */
    GC_ERR_OUT_OF_MEMORY = 5,
    /**
     * The CUDA driver or a kernel reported an error.
     */
    GC_ERR_CUDA = 6,
    /**
     * The operation was cancelled before it finished.
     */
    GC_ERR_CANCELLED = 7,
    /**
     * A bug in GhostCore (including a caught Rust panic). Please report it with the
     * message from gc_last_error().
     */
    GC_ERR_INTERNAL = 8,
    /**
     * A caller buffer is too small. The call has written the size it needs to its size
     * out-parameter and has not touched the buffer.
     */
    GC_ERR_BUFFER_TOO_SMALL = 9,
} gc_status;

/**
 * Why gc_generate stopped (gc_generate_stats.stop_reason).
 */
typedef enum gc_stop_reason {
    /**
     * max_tokens tokens were generated.
     */
    GC_STOP_MAX_TOKENS = 0,
    /**
     * The model produced an end-of-generation token (EOS, EOT); it is not passed to the
     * callback.
     */
    GC_STOP_END_OF_GENERATION = 1,
    /**
     * The callback returned false.
     */
    GC_STOP_CALLBACK = 2,
    /**
     * The context is full (n_ctx tokens).
     */
    GC_STOP_CONTEXT_FULL = 3,
} gc_stop_reason;

/**
 * How a context skips FFN neurons (gc_sparsity_params.mode). Decoding of single tokens
 * (generation) is sparse; prompt batches stay dense.
 */
typedef enum gc_sparsity_mode {
    /**
     * Compute every neuron (default).
     */
    GC_SPARSITY_DENSE = 0,
    /**
     * Skip neurons whose |act(gate·x)| is at most `threshold` (one global threshold;
     * needs no mask).
     */
    GC_SPARSITY_THRESHOLD = 1,
    /**
     * Skip the fraction `target_sparsity` of neurons using the per-layer thresholds of
     * the context's mask (gc_ctx_set_mask first).
     */
    GC_SPARSITY_TARGET = 2,
    /**
     * A mode in the `ghost --sparsity` language, given in `spec`: e.g. "budget:1" (the
     * mask's best setting within a 1% perplexity increase), "cascade:0.2:0.5",
     * "target:0.4:product", "dead", "gate:0.05,dead". Modes that use calibration data
     * need the context's mask.
     */
    GC_SPARSITY_SPEC = 3,
} gc_sparsity_mode;

/**
 * Options for gc_ctx_new. Start from gc_ctx_default_params().
 */
typedef struct gc_ctx_params {
    /**
     * sizeof(gc_ctx_params); set by gc_ctx_default_params().
     */
    uint32_t struct_size;
    /**
     * Context length in tokens (prompt + generated). 0 (default): the model's
     * n_ctx_train, capped at 4096.
     */
    uint32_t n_ctx;
    /**
     * CPU threads. 0 (default): the number of available cores.
     */
    uint32_t n_threads;
    /**
     * Most prompt tokens evaluated in one batch. 0 (default): 512.
     */
    uint32_t n_batch;
} gc_ctx_params;

/**
 * A token id: 0 .. n_vocab-1 (see gc_model_info).
 */
typedef int32_t gc_token;

/**
 * Sampling and stopping options for gc_generate. Start from
 * gc_generate_default_params().
 */
typedef struct gc_generate_params {
    /**
     * sizeof(gc_generate_params); set by gc_generate_default_params().
     */
    uint32_t struct_size;
    /**
     * Most tokens to generate (default 128). Must be > 0.
     */
    uint32_t max_tokens;
    /**
     * Softmax temperature; 0 means greedy (always the most likely token). Default 0.8.
     */
    float temperature;
    /**
     * Keep only the k most likely tokens; 0 disables. Default 40.
     */
    uint32_t top_k;
    /**
     * Nucleus sampling: keep the smallest set with probability >= top_p; 1 disables.
     * Default 0.95.
     */
    float top_p;
    /**
     * Drop tokens less likely than min_p times the most likely one; 0 disables.
     * Default 0.05.
     */
    float min_p;
    /**
     * Penalty for tokens seen in the last repeat_last_n tokens; 1 disables. Default 1.
     */
    float repeat_penalty;
    /**
     * Window of the repeat penalty, in tokens. Default 64.
     */
    uint32_t repeat_last_n;
    /**
     * Random seed: the same seed, params and prompt give the same text. Default 0.
     */
    uint64_t seed;
    /**
     * Add the model's BOS token etc. to the prompt (default true); only done when the
     * context is empty, so continuing a sequence never inserts a second BOS.
     */
    bool add_special;
    /**
     * Turn special-token text in the prompt (chat-template markers) into special tokens
     * (default true).
     */
    bool parse_special;
    /**
     * Stop at the model's end-of-generation token (default true).
     */
    bool stop_at_eog;
} gc_generate_params;

/**
 * Called by gc_generate for each generated token, in order. `piece` points to `len`
 * bytes of text (not NUL-terminated; may be an incomplete UTF-8 sequence that the next
 * piece completes) valid only during the call. Return true to continue, false to stop
 * generation (gc_generate then returns GC_OK with stop_reason GC_STOP_CALLBACK). The
 * callback must not call into GhostCore with the same context (that call fails with
 * GC_ERR_INVALID_ARG), and must return normally: no longjmp or C++ exception may cross
 * the library.
 */
typedef bool (*gc_token_callback)(const char *piece, size_t len, gc_token token, void *user_data);

/**
 * Figures of one gc_generate call. Set struct_size = sizeof(gc_generate_stats) before
 * the call.
 */
typedef struct gc_generate_stats {
    /**
     * Set by the caller to sizeof(gc_generate_stats).
     */
    uint32_t struct_size;
    /**
     * Tokens in the prompt (after tokenization).
     */
    uint32_t n_prompt_tokens;
    /**
     * Tokens generated (passed to the callback).
     */
    uint32_t n_generated_tokens;
    /**
     * A gc_stop_reason value.
     */
    uint32_t stop_reason;
    /**
     * Prompt evaluation time in seconds, and its throughput in tokens per second.
     */
    double prompt_seconds;
    double prompt_tokens_per_second;
    /**
     * Generation time in seconds (sampling included), and its throughput.
     */
    double generate_seconds;
    double generate_tokens_per_second;
    /**
     * Fraction of FFN neurons skipped during generation (0 when dense).
     */
    float sparsity;
} gc_generate_stats;

/**
 * Options for gc_model_load. Start from gc_model_default_params().
 */
typedef struct gc_model_params {
    /**
     * sizeof(gc_model_params); set by gc_model_default_params().
     */
    uint32_t struct_size;
    /**
     * Run contexts on a CUDA GPU (weights and KV cache on the device). false (default):
     * CPU only. A build without CUDA returns GC_ERR_UNSUPPORTED when this is true; a CUDA
     * build on a machine without a driver or device runs on the CPU and says so once on
     * stderr.
     */
    bool use_gpu;
    /**
     * CUDA device ordinal when use_gpu is true (default 0; other ordinals are
     * GC_ERR_UNSUPPORTED in this version).
     */
    uint32_t gpu_device;
} gc_model_params;

/**
 * Facts about a loaded model, filled by gc_model_get_info.
 */
typedef struct gc_model_info {
    /**
     * Set to sizeof(gc_model_info) before calling gc_model_get_info.
     */
    uint32_t struct_size;
    /**
     * Architecture from the GGUF (general.architecture), e.g. "llama", "gemma3". Owned by
     * the model; valid until gc_model_free.
     */
    const char *architecture;
    /**
     * Model name (general.name), "" if absent. Owned by the model; valid until
     * gc_model_free.
     */
    const char *name;
    /**
     * Number of weights (elements of all tensors).
     */
    uint64_t n_params;
    /**
     * Context length the model was trained with (<arch>.context_length).
     */
    uint32_t n_ctx_train;
    /**
     * Number of tokens in the vocabulary; valid tokens are 0 .. n_vocab-1.
     */
    uint32_t n_vocab;
    /**
     * Number of transformer blocks.
     */
    uint32_t n_layer;
    /**
     * Embedding width.
     */
    uint32_t n_embd;
} gc_model_info;

/**
 * Sparsity settings for gc_ctx_set_sparsity. Start from
 * gc_sparsity_default_params().
 */
typedef struct gc_sparsity_params {
    /**
     * sizeof(gc_sparsity_params); set by gc_sparsity_default_params().
     */
    uint32_t struct_size;
    /**
     * A gc_sparsity_mode value (default GC_SPARSITY_DENSE).
     */
    uint32_t mode;
    /**
     * For GC_SPARSITY_THRESHOLD: the activation magnitude at or below which a neuron is
     * skipped (>= 0).
     */
    float threshold;
    /**
     * For GC_SPARSITY_TARGET: the fraction of neurons to skip, in [0, 1).
     */
    float target_sparsity;
    /**
     * For GC_SPARSITY_SPEC: the mode text (NUL-terminated; read during the call only).
     */
    const char *spec;
} gc_sparsity_params;

/**
 * Options for gc_mask_calibrate. Start from gc_calibrate_default_params().
 */
typedef struct gc_calibrate_params {
    /**
     * sizeof(gc_calibrate_params); set by gc_calibrate_default_params().
     */
    uint32_t struct_size;
    /**
     * Tokens per calibration chunk (the texts are joined, then cut into chunks of this
     * length; a shorter tail is dropped). Default 512; the texts must hold at least one
     * chunk.
     */
    uint32_t n_ctx;
    /**
     * CPU threads; 0 (default): one per available core.
     */
    uint32_t n_threads;
    /**
     * Activation magnitude counted as "firing" for the statistics and the dead-neuron
     * mask. Default 0.01.
     */
    float eps;
    /**
     * Also measure, on a held-out 15% of the chunks, which sparsity setting stays within
     * each perplexity budget (0.5% .. 10%), enabling "budget:P" modes. Slow: runs ~20
     * perplexity evaluations. Default false.
     */
    bool measure_budgets;
    /**
     * Store the requantized neuron-major ffn_down copy in the mask for layers that have no
     * exact copy (faster loading, larger mask file; Q4_K and Q6_K downs, all of a Q4_K_M
     * model's, get exact copies at load and need none). Default true.
     */
    bool store_down_copy;
} gc_calibrate_params;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Returns the default context params (struct_size set, everything automatic).
 */
struct gc_ctx_params gc_ctx_default_params(void);

/**
 * Creates a context for `model`. `params` may be NULL for the defaults. The context
 * keeps the model's weights alive: gc_model_free may be called before gc_ctx_free.
 * On success writes the handle to `*out_ctx` (free with gc_ctx_free).
 *
 * Thread-safety: many contexts may be made from one model and used on different
 * threads at once. One context must be used by one thread at a time (concurrent use is
 * detected and rejected with GC_ERR_INVALID_ARG).
 *
 * Errors: GC_ERR_INVALID_ARG (bad params, n_ctx above 4x the training context),
 * GC_ERR_OUT_OF_MEMORY.
 *
 * # Safety
 * `model` is NULL or a live model handle; `params` is NULL or a valid params struct;
 * `out_ctx` is NULL or writable.
 */
enum gc_status gc_ctx_new(const gc_model *model,
                          const struct gc_ctx_params *params,
                          gc_ctx **out_ctx);

/**
 * Frees a context. NULL is a no-op. Freeing twice is undefined behaviour.
 *
 * # Safety
 * `ctx` is NULL or a live context handle that no other thread is using.
 */
void gc_ctx_free(gc_ctx *ctx);

/**
 * Clears the context's token history (KV cache) and logits so a new, unrelated
 * sequence can start. Keeps the sparsity settings. Also recovers a context left
 * unusable by an internal error.
 *
 * # Safety
 * `ctx` is NULL or a live context handle.
 */
enum gc_status gc_ctx_reset(gc_ctx *ctx);

/**
 * Appends `n_tokens` tokens to the context and runs the model over them, leaving the
 * logits of the last one for gc_get_logits. Tokens must be in 0 .. n_vocab-1.
 *
 * Errors: GC_ERR_INVALID_ARG (NULL tokens, n_tokens = 0, token out of range, not enough
 * room left in the context; the context is then unchanged).
 *
 * # Safety
 * `ctx` is NULL or a live context; `tokens` is NULL or points to `n_tokens` tokens.
 */
enum gc_status gc_decode(gc_ctx *ctx, const gc_token *tokens, size_t n_tokens);

/**
 * Copies the logits (one float per vocabulary token, unnormalised) of the last token
 * decoded into `out`, which holds `capacity` floats. `*n_logits` receives n_vocab. If
 * `capacity` < n_vocab, returns GC_ERR_BUFFER_TOO_SMALL and leaves `out` untouched
 * (call with out = NULL, capacity = 0 to learn the size).
 *
 * Errors: GC_ERR_INVALID_ARG (no token decoded since the context was made or reset).
 *
 * # Safety
 * `ctx` is NULL or a live context; `out` is NULL or writable for `capacity` floats;
 * `n_logits` is NULL or writable.
 */
enum gc_status gc_get_logits(gc_ctx *ctx, float *out, size_t capacity, size_t *n_logits);

/**
 * Returns the default generation params (struct_size set).
 */
struct gc_generate_params gc_generate_default_params(void);

/**
 * Tokenizes `prompt` (NUL-terminated UTF-8), appends it to the context, then samples up
 * to max_tokens tokens, calling `on_token` with each one's text as soon as it is chosen.
 * The context keeps the whole exchange, so a later call continues the same sequence
 * (pass add_special = false then); call gc_ctx_reset to start over. `params` may be
 * NULL for the defaults; `on_token` may be NULL (the text is then only counted);
 * `stats` may be NULL, or has struct_size set and receives the figures on success.
 *
 * Errors: GC_ERR_INVALID_ARG (NULL ctx/prompt, a prompt of no tokens on an empty
 * context, bad params, a prompt longer than the room left in the context), plus those of
 * gc_decode.
 *
 * # Safety
 * `ctx` is NULL or a live context; `prompt` is NULL or NUL-terminated; `params` is NULL
 * or a valid params struct; `on_token` is NULL or a function safe to call with
 * `user_data`; `stats` is NULL or points to `struct_size` writable bytes.
 */
enum gc_status gc_generate(gc_ctx *ctx,
                           const char *prompt,
                           const struct gc_generate_params *params,
                           gc_token_callback on_token,
                           void *user_data,
                           struct gc_generate_stats *stats);

/**
 * Returns the default model params (struct_size set, CPU).
 */
struct gc_model_params gc_model_default_params(void);

/**
 * Loads a GGUF model from `path` (NUL-terminated UTF-8). `params` may be NULL for the
 * defaults. On success writes a new handle to `*out_model` (free it with gc_model_free);
 * on failure leaves `*out_model` untouched.
 *
 * Errors: GC_ERR_INVALID_ARG (NULL path/out_model, bad params), GC_ERR_IO (cannot open),
 * GC_ERR_FORMAT (not a valid GGUF model), GC_ERR_UNSUPPORTED (architecture or tensor
 * type this build does not run, or use_gpu without CUDA), GC_ERR_OUT_OF_MEMORY.
 *
 * # Safety
 * `path` is NULL or a NUL-terminated string; `params` is NULL or a valid params struct;
 * `out_model` is NULL or writable.
 */
enum gc_status gc_model_load(const char *path,
                             const struct gc_model_params *params,
                             gc_model **out_model);

/**
 * Frees a model handle. The weights stay alive until the last context made from the
 * model is freed too, so contexts may outlive this call. NULL is a no-op. Freeing a
 * handle twice is undefined behaviour.
 *
 * # Safety
 * `model` is NULL or a handle from gc_model_load not yet freed, and no other thread is
 * using it during this call.
 */
void gc_model_free(gc_model *model);

/**
 * Fills `*info` with facts about the model. Set `info->struct_size = sizeof(gc_model_info)`
 * first. The strings it points to stay valid until gc_model_free.
 *
 * Thread-safe: any number of threads may query one model.
 *
 * # Safety
 * `model` is NULL or a live handle; `info` is NULL or points to `struct_size` writable
 * bytes.
 */
enum gc_status gc_model_get_info(const gc_model *model, struct gc_model_info *info);

/**
 * Returns the default sparsity params (dense).
 */
struct gc_sparsity_params gc_sparsity_default_params(void);

/**
 * Returns the default calibration params.
 */
struct gc_calibrate_params gc_calibrate_default_params(void);

/**
 * Calibrates a sparsity mask for `model` by running it densely over `n_texts` sample
 * texts (NUL-terminated UTF-8, representative of the intended use; together at least
 * params->n_ctx tokens, ideally tens of thousands). `params` may be NULL for the
 * defaults. On success writes a new mask to `*out_mask` (free with gc_mask_free). The
 * mask is bound to this model's FFN weights. Takes a few seconds per chunk of n_ctx
 * tokens on small models (much longer with measure_budgets).
 *
 * Errors: GC_ERR_INVALID_ARG (NULL or non-UTF-8 texts, too little text, bad params).
 *
 * # Safety
 * `model` is NULL or a live model; `texts` is NULL or points to `n_texts` pointers that
 * are each NULL or NUL-terminated; `params` is NULL or valid; `out_mask` NULL or writable.
 */
enum gc_status gc_mask_calibrate(const gc_model *model,
                                 const char *const *texts,
                                 size_t n_texts,
                                 const struct gc_calibrate_params *params,
                                 gc_mask **out_mask);

/**
 * Loads a mask saved by gc_mask_save (or made by `ghost calibrate`, MODEL.ghost) for
 * `model`. Errors: GC_ERR_IO (cannot read), GC_ERR_FORMAT (not a mask file),
 * GC_ERR_INVALID_ARG (made for a model with other FFN weights).
 *
 * # Safety
 * `model` NULL or live; `path` NULL or NUL-terminated; `out_mask` NULL or writable.
 */
enum gc_status gc_mask_load(const gc_model *model, const char *path, gc_mask **out_mask);

/**
 * Saves a mask to `path` (overwriting it).
 *
 * # Safety
 * `mask` NULL or live; `path` NULL or NUL-terminated.
 */
enum gc_status gc_mask_save(const gc_mask *mask, const char *path);

/**
 * Frees a mask. A context it was set on keeps its own reference, so the mask may be
 * freed right after gc_ctx_set_mask. NULL is a no-op.
 *
 * # Safety
 * `mask` is NULL or a live mask handle not in use by another thread.
 */
void gc_mask_free(gc_mask *mask);

/**
 * Sets the mask (calibration data) the context uses; NULL removes it and returns the
 * context to dense decoding. The mask must have been made for the context's model's
 * weights (GC_ERR_INVALID_ARG otherwise). If the context is dense when a mask is set, it
 * switches to the mask's default mode: its best setting within a 1% perplexity increase
 * when the mask has a budget table (measure_budgets), otherwise skipping only the
 * neurons calibration found dead. Choose another mode with gc_ctx_set_sparsity.
 *
 * # Safety
 * `ctx` NULL or live; `mask` NULL or live.
 */
enum gc_status gc_ctx_set_mask(gc_ctx *ctx, const gc_mask *mask);

/**
 * Sets how the context skips FFN neurons from the next decoded token on. `params` may
 * be NULL for dense. The mask (if any) stays set. gc_generate_stats.sparsity reports the
 * fraction of FFN neurons skipped during generation. On error the previous settings stay.
 *
 * Errors: GC_ERR_INVALID_ARG (unknown mode, value out of range, bad spec text, or a mode
 * that needs calibration data while the context has no mask).
 *
 * # Safety
 * `ctx` NULL or live; `params` NULL or a valid params struct.
 */
enum gc_status gc_ctx_set_sparsity(gc_ctx *ctx, const struct gc_sparsity_params *params);

/**
 * Tunes the sparse kernels to this CPU for the context's model: measures how long each
 * sparse path takes at the model's FFN shape (a few seconds; or reads what an earlier call
 * or `ghost tune` cached under the user's cache directory, unless `force`), then decodes
 * with the context's sparsity setting (gc_ctx_set_sparsity / gc_ctx_set_mask), built-in and
 * measured costs alternating in paired blocks of 8 tokens (3 × 128 tokens of a built-in
 * text), and keeps the measured costs, for this process and later ones, only if they were
 * not slower. Then each class of sparse paths the decode took (input-major copy, gathered
 * rows, exact down copies) is tried never taken, in the same paired way, and turned off
 * where decode was faster without it. Last, the sparse FFN so tuned decodes against the
 * dense one, and that verdict is recorded too (`ghost run` then decodes dense where dense
 * was significantly faster); this context keeps the sparsity it was given. The verdicts
 * are cached with the costs. All of it
 * holds for the context's thread count (its n_threads): contexts with another count
 * use what was tuned for theirs. The context's token history is cleared.
 * `out_speedup` (may be NULL) receives the decode speed with the measured costs relative
 * to the built-in ones (> 1: faster).
 *
 * Errors: GC_ERR_INVALID_ARG (a dense context, a GPU context, a context of fewer than 32
 * tokens), GC_ERR_UNSUPPORTED (this CPU runs the scalar kernels, where bytes alone decide,
 * or GHOST_PATH_COSTS=builtin, or no cache directory).
 *
 * # Safety
 * `ctx` NULL or live; `out_speedup` NULL or writable.
 */
enum gc_status gc_ctx_tune_path_costs(gc_ctx *ctx, bool force, double *out_speedup);

/**
 * Whether sparsity pays on this CPU for the context: what the last tune
 * (gc_ctx_tune_path_costs, or `ghost tune -t N --sparsity MODE`) found when it decoded the
 * context's sparsity mode at its thread count with the tuned sparse FFN against the dense
 * one, in paired blocks. `*out_checked` is false where no tune with that mode and thread
 * count is cached on this machine (and on the GPU); otherwise `*out_speedup` receives the
 * sparse FFN's decode speed relative to dense (> 1: faster; median of the pairs) and
 * `*out_dense_faster` whether dense was faster in significantly more pairs (sign test,
 * one-sided 5%). `ghost run` decodes dense where it was; a program may do the same by
 * setting GC_SPARSITY_DENSE. Any out pointer may be NULL.
 *
 * Errors: GC_ERR_INVALID_ARG (NULL or dense context), GC_ERR_FORMAT (a damaged cache file,
 * named in the message), GC_ERR_IO.
 *
 * # Safety
 * `ctx` NULL or live; each out pointer NULL or writable.
 */
enum gc_status gc_ctx_sparse_check(const gc_ctx *ctx,
                                   bool *out_checked,
                                   double *out_speedup,
                                   bool *out_dense_faster);

/**
 * Returns the message of the most recent failing GhostCore call on the calling thread,
 * or "" if none has failed yet. Never NULL. The string belongs to the library and stays
 * valid until the next failing call on this thread; copy it to keep it. Successful calls
 * leave it unchanged.
 */
const char *gc_last_error(void);

/**
 * Returns the name of a status code ("GC_OK", "GC_ERR_IO", ...) as a static string, or
 * "GC_UNKNOWN_STATUS" for a value that is not a gc_status. Never NULL.
 */
const char *gc_status_name(int32_t status);

/**
 * Splits `text` (`text_len` bytes of UTF-8, no NUL needed) into tokens, written to
 * `out` (room for `capacity` tokens). `*n_tokens` receives the number of tokens. If they
 * do not fit, returns GC_ERR_BUFFER_TOO_SMALL with `*n_tokens` set and `out` untouched:
 * allocate that many and call again.
 *
 * `add_special`: add the model's BOS/EOS tokens as it was trained to.
 * `parse_special`: turn special-token text such as "<|im_start|>" into its token instead
 * of tokenizing it as plain text.
 *
 * Thread-safe: any number of threads may tokenize with one model.
 *
 * # Safety
 * `model` is NULL or a live model; `text` is NULL or readable for `text_len` bytes;
 * `out` is NULL or writable for `capacity` tokens; `n_tokens` is NULL or writable.
 */
enum gc_status gc_tokenize(const gc_model *model,
                           const char *text,
                           size_t text_len,
                           bool add_special,
                           bool parse_special,
                           gc_token *out,
                           size_t capacity,
                           size_t *n_tokens);

/**
 * Writes the text of one token to `buf` (room for `capacity` bytes) followed by a NUL.
 * `*n_bytes` receives the text length without the NUL; the buffer needs `*n_bytes + 1`
 * bytes. If it is too small, returns GC_ERR_BUFFER_TOO_SMALL with `*n_bytes` set and
 * `buf` untouched. The text may be an incomplete UTF-8 sequence (byte tokens).
 * `special`: render control tokens such as "<|im_end|>" (otherwise they give "").
 *
 * # Safety
 * `model` is NULL or a live model; `buf` is NULL or writable for `capacity` bytes;
 * `n_bytes` is NULL or writable.
 */
enum gc_status gc_token_to_piece(const gc_model *model,
                                 gc_token token,
                                 bool special,
                                 char *buf,
                                 size_t capacity,
                                 size_t *n_bytes);

/**
 * Turns `n_tokens` tokens back into text, written to `buf` (room for `capacity` bytes)
 * followed by a NUL. `*n_bytes` receives the text length without the NUL; the buffer
 * needs `*n_bytes + 1` bytes. If it is too small, returns GC_ERR_BUFFER_TOO_SMALL with
 * `*n_bytes` set and `buf` untouched. `remove_special`: drop BOS/EOS and other control
 * tokens from the text.
 *
 * # Safety
 * `model` is NULL or a live model; `tokens` is NULL or readable for `n_tokens` tokens;
 * `buf` is NULL or writable for `capacity` bytes; `n_bytes` is NULL or writable.
 */
enum gc_status gc_detokenize(const gc_model *model,
                             const gc_token *tokens,
                             size_t n_tokens,
                             bool remove_special,
                             char *buf,
                             size_t capacity,
                             size_t *n_bytes);

/**
 * Returns the ABI version of the loaded library (GHOSTCORE_ABI_VERSION of the header it
 * was built from).
 */
uint32_t gc_abi_version(void);

/**
 * Returns the library version ("MAJOR.MINOR.PATCH") as a static string. Never NULL.
 */
const char *gc_version(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* GHOSTCORE_H */
