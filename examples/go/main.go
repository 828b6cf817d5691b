// The Go counterpart of examples/c/simple.c, through cgo. Loads a GGUF model, generates
// greedily from a prompt and prints the text.
//
//	CGO_LDFLAGS="-L$(scripts/build-lib.sh)" go build -o simple_go .
//	LD_LIBRARY_PATH=... ./simple_go [-m MODEL.gguf] [-n N_PREDICT] [PROMPT]
//
// (or `#cgo pkg-config: ghostcore` once scripts/install-lib.sh has installed it).
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -lghostcore
#include <stdlib.h>
#include "ghostcore.h"

extern bool goOnToken(char *piece, size_t len, gc_token token, void *user_data);
*/
import "C"

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/cgo"
	"unsafe"
)

// ghostError turns a failed status into an error carrying gc_last_error().
func ghostError(what string, st uint32) error {
	return fmt.Errorf("%s: %s: %s", what, C.GoString(C.gc_status_name(C.int32_t(st))),
		C.GoString(C.gc_last_error()))
}

//export goOnToken
func goOnToken(piece *C.char, length C.size_t, token C.gc_token, userData unsafe.Pointer) C.bool {
	onPiece := (*(*cgo.Handle)(userData)).Value().(func(string) bool)
	return C.bool(onPiece(C.GoStringN(piece, C.int(length))))
}

func findModel() string {
	for _, dir := range []string{"models/", "../shared/models/"} {
		path := dir + "smollm2-135m-q4_k_m.gguf"
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	return ""
}

func run(modelPath, prompt string, nPredict int) error {
	if C.gc_abi_version() != C.GHOSTCORE_ABI_VERSION {
		return errors.New("libghostcore ABI does not match ghostcore.h")
	}
	cPath := C.CString(modelPath)
	defer C.free(unsafe.Pointer(cPath))
	var model *C.gc_model
	if st := C.gc_model_load(cPath, nil, &model); st != C.GC_OK {
		return ghostError("gc_model_load", uint32(st))
	}
	defer C.gc_model_free(model)

	var info C.gc_model_info
	info.struct_size = C.uint32_t(unsafe.Sizeof(info))
	if st := C.gc_model_get_info(model, &info); st != C.GC_OK {
		return ghostError("gc_model_get_info", uint32(st))
	}
	fmt.Fprintf(os.Stderr, "model: %s (%s), %d parameters\n", C.GoString(info.name),
		C.GoString(info.architecture), uint64(info.n_params))

	var ctx *C.gc_ctx
	if st := C.gc_ctx_new(model, nil, &ctx); st != C.GC_OK {
		return ghostError("gc_ctx_new", uint32(st))
	}
	defer C.gc_ctx_free(ctx)

	params := C.gc_generate_default_params()
	params.max_tokens = C.uint32_t(nPredict)
	params.temperature = 0 // greedy
	var stats C.gc_generate_stats
	stats.struct_size = C.uint32_t(unsafe.Sizeof(stats))

	handle := cgo.NewHandle(func(piece string) bool {
		fmt.Print(piece)
		return true
	})
	defer handle.Delete()
	cPrompt := C.CString(prompt)
	defer C.free(unsafe.Pointer(cPrompt))
	fmt.Print(prompt)
	st := C.gc_generate(ctx, cPrompt, &params, C.gc_token_callback(C.goOnToken),
		unsafe.Pointer(&handle), &stats)
	fmt.Println()
	if st != C.GC_OK {
		return ghostError("gc_generate", uint32(st))
	}
	fmt.Fprintf(os.Stderr, "generated %d tokens, %.1f tok/s\n", uint32(stats.n_generated_tokens),
		float64(stats.generate_tokens_per_second))
	return nil
}

func main() {
	modelPath := flag.String("m", "", "GGUF model (default: models/ or ../shared/models/)")
	nPredict := flag.Int("n", 32, "tokens to generate")
	flag.Parse()
	prompt := "Hello my name is"
	if flag.NArg() > 0 {
		prompt = flag.Arg(0)
	}
	if *modelPath == "" {
		*modelPath = findModel()
	}
	if *modelPath == "" || *nPredict <= 0 {
		fmt.Fprintln(os.Stderr, "usage: simple_go [-m MODEL.gguf] [-n N_PREDICT>0] [PROMPT]")
		os.Exit(1)
	}
	if err := run(*modelPath, prompt, *nPredict); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
