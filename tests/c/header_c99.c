/*
 * header_c99.c: ghostcore.h must compile cleanly as strict C99
 * (-std=c99 -Wall -Wextra -Werror -pedantic), be safe to include twice, and declare
 * everything with the documented types. Compile-only; nothing is called.
 */
#include "ghostcore.h"
#include "ghostcore.h" /* include guard */

/* C99 has no _Static_assert: a negative array size fails the build instead. */
#define STATIC_CHECK(name, cond) typedef char static_check_##name[(cond) ? 1 : -1]

STATIC_CHECK(ok_is_zero, GC_OK == 0);
STATIC_CHECK(abi_version_positive, GHOSTCORE_ABI_VERSION >= 1);
STATIC_CHECK(params_start_with_size, sizeof(((gc_model_params *)0)->struct_size) == 4);
STATIC_CHECK(token_is_32_bits, sizeof(gc_token) == 4);

static bool on_token(const char *piece, size_t len, gc_token token, void *user_data) {
    (void)piece;
    (void)len;
    (void)token;
    (void)user_data;
    return true;
}

/* Take the address of every function so a missing or mistyped declaration fails. */
void header_c99_uses(void);
void header_c99_uses(void) {
    gc_status (*load)(const char *, const gc_model_params *, gc_model **) = gc_model_load;
    gc_status (*gen)(gc_ctx *, const char *, const gc_generate_params *, gc_token_callback,
                     void *, gc_generate_stats *) = gc_generate;
    gc_token_callback cb = on_token;
    (void)load;
    (void)gen;
    (void)cb;
    (void)gc_abi_version;
    (void)gc_version;
    (void)gc_last_error;
    (void)gc_status_name;
    (void)gc_model_default_params;
    (void)gc_model_free;
    (void)gc_model_get_info;
    (void)gc_ctx_default_params;
    (void)gc_ctx_new;
    (void)gc_ctx_free;
    (void)gc_ctx_reset;
    (void)gc_decode;
    (void)gc_get_logits;
    (void)gc_tokenize;
    (void)gc_token_to_piece;
    (void)gc_detokenize;
    (void)gc_generate_default_params;
    (void)gc_sparsity_default_params;
    (void)gc_calibrate_default_params;
    (void)gc_mask_calibrate;
    (void)gc_mask_load;
    (void)gc_mask_save;
    (void)gc_mask_free;
    (void)gc_ctx_set_mask;
    (void)gc_ctx_set_sparsity;
}
