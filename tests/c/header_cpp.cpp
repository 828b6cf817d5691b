// header_cpp.cpp: ghostcore.h must compile cleanly as C++ (-std=c++11 -Wall -Wextra
// -Werror -pedantic), with C linkage, and be safe to include twice. Compile-only.
#include "ghostcore.h"
#include "ghostcore.h"

#include <type_traits>

static_assert(GC_OK == 0, "GC_OK is 0");
static_assert(std::is_standard_layout<gc_generate_params>::value, "params are plain C structs");
static_assert(std::is_trivially_copyable<gc_generate_stats>::value, "stats are plain C structs");
static_assert(sizeof(gc_token) == 4, "gc_token is int32_t");

extern "C" bool header_cpp_callback(const char *, size_t, gc_token, void *) { return true; }

void header_cpp_uses();
void header_cpp_uses() {
    gc_token_callback cb = header_cpp_callback;
    gc_status (*gen)(gc_ctx *, const char *, const gc_generate_params *, gc_token_callback,
                     void *, gc_generate_stats *) = gc_generate;
    (void)cb;
    (void)gen;
    gc_model_params mp = gc_model_default_params();
    (void)mp;
}
