// The few ggml symbols ggml-quants.c needs from ggml.c, for gen.c only.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ggml_abort %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    abort();
}

static void geometry(enum ggml_type t, size_t * block, size_t * bytes) {
    switch (t) {
        case GGML_TYPE_Q4_0: *block = 32;  *bytes = 18;  break;
        case GGML_TYPE_Q4_1: *block = 32;  *bytes = 20;  break;
        case GGML_TYPE_Q5_0: *block = 32;  *bytes = 22;  break;
        case GGML_TYPE_Q5_1: *block = 32;  *bytes = 24;  break;
        case GGML_TYPE_Q8_0: *block = 32;  *bytes = 34;  break;
        case GGML_TYPE_Q2_K: *block = 256; *bytes = 84;  break;
        case GGML_TYPE_Q3_K: *block = 256; *bytes = 110; break;
        case GGML_TYPE_Q4_K: *block = 256; *bytes = 144; break;
        case GGML_TYPE_Q5_K: *block = 256; *bytes = 176; break;
        case GGML_TYPE_Q6_K: *block = 256; *bytes = 210; break;
        default: fprintf(stderr, "type %d not in stubs.c\n", (int) t); abort();
    }
}

size_t ggml_type_size(enum ggml_type t) { size_t b, s; geometry(t, &b, &s); return s; }
size_t ggml_row_size(enum ggml_type t, int64_t ne) { size_t b, s; geometry(t, &b, &s); return s * (ne / b); }
const char * ggml_type_name(enum ggml_type t) { (void) t; return "?"; }
