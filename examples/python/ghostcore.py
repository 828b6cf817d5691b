"""ghostcore.py: ctypes bindings for the GhostCore C API (include/ghostcore.h).

Finds libghostcore through $GHOSTCORE_LIB (a path to the .so), then the library
path (ctypes.util.find_library), then target/{release,debug}/ of this checkout.
Struct layouts mirror ghostcore.h; each is checked against the struct_size that the
library's *_default_params() reports, so a mismatch fails at import, not later.
"""

import ctypes
import ctypes.util
import os
from pathlib import Path

ABI_VERSION = 1

GC_OK = 0
GC_ERR_BUFFER_TOO_SMALL = 9
GC_STOP_CALLBACK = 2

gc_token = ctypes.c_int32


class ModelParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("use_gpu", ctypes.c_bool),
                ("gpu_device", ctypes.c_uint32)]


class ModelInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("architecture", ctypes.c_char_p),
                ("name", ctypes.c_char_p), ("n_params", ctypes.c_uint64),
                ("n_ctx_train", ctypes.c_uint32), ("n_vocab", ctypes.c_uint32),
                ("n_layer", ctypes.c_uint32), ("n_embd", ctypes.c_uint32)]


class CtxParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("n_ctx", ctypes.c_uint32),
                ("n_threads", ctypes.c_uint32), ("n_batch", ctypes.c_uint32)]


class GenerateParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("max_tokens", ctypes.c_uint32),
                ("temperature", ctypes.c_float), ("top_k", ctypes.c_uint32),
                ("top_p", ctypes.c_float), ("min_p", ctypes.c_float),
                ("repeat_penalty", ctypes.c_float), ("repeat_last_n", ctypes.c_uint32),
                ("seed", ctypes.c_uint64), ("add_special", ctypes.c_bool),
                ("parse_special", ctypes.c_bool), ("stop_at_eog", ctypes.c_bool)]


class GenerateStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("n_prompt_tokens", ctypes.c_uint32),
                ("n_generated_tokens", ctypes.c_uint32), ("stop_reason", ctypes.c_uint32),
                ("prompt_seconds", ctypes.c_double),
                ("prompt_tokens_per_second", ctypes.c_double),
                ("generate_seconds", ctypes.c_double),
                ("generate_tokens_per_second", ctypes.c_double),
                ("sparsity", ctypes.c_float)]


TOKEN_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t,
                                  gc_token, ctypes.c_void_p)


def _find_library():
    env = os.environ.get("GHOSTCORE_LIB")
    if env:
        return env
    found = ctypes.util.find_library("ghostcore")
    if found:
        return found
    root = Path(__file__).resolve().parents[2]
    for profile in ("release", "debug"):
        candidate = root / "target" / profile / "libghostcore.so"
        if candidate.is_file():
            return str(candidate)
    raise OSError("libghostcore not found: set GHOSTCORE_LIB or run scripts/build-lib.sh")


_lib = ctypes.CDLL(_find_library())


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_status = ctypes.c_int
_p = ctypes.c_void_p
_abi_version = _fn("gc_abi_version", ctypes.c_uint32)
_last_error = _fn("gc_last_error", ctypes.c_char_p)
_status_name = _fn("gc_status_name", ctypes.c_char_p, ctypes.c_int32)
_model_default_params = _fn("gc_model_default_params", ModelParams)
_model_load = _fn("gc_model_load", _status, ctypes.c_char_p, ctypes.POINTER(ModelParams),
                  ctypes.POINTER(_p))
_model_free = _fn("gc_model_free", None, _p)
_model_get_info = _fn("gc_model_get_info", _status, _p, ctypes.POINTER(ModelInfo))
_ctx_default_params = _fn("gc_ctx_default_params", CtxParams)
_ctx_new = _fn("gc_ctx_new", _status, _p, ctypes.POINTER(CtxParams), ctypes.POINTER(_p))
_ctx_free = _fn("gc_ctx_free", None, _p)
_tokenize = _fn("gc_tokenize", _status, _p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_bool,
                ctypes.c_bool, ctypes.POINTER(gc_token), ctypes.c_size_t,
                ctypes.POINTER(ctypes.c_size_t))
_token_to_piece = _fn("gc_token_to_piece", _status, _p, gc_token, ctypes.c_bool, ctypes.c_char_p,
                      ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))
_detokenize = _fn("gc_detokenize", _status, _p, ctypes.POINTER(gc_token), ctypes.c_size_t,
                  ctypes.c_bool, ctypes.c_char_p, ctypes.c_size_t,
                  ctypes.POINTER(ctypes.c_size_t))
_generate_default_params = _fn("gc_generate_default_params", GenerateParams)
_generate = _fn("gc_generate", _status, _p, ctypes.c_char_p, ctypes.POINTER(GenerateParams),
                TOKEN_CALLBACK, _p, ctypes.POINTER(GenerateStats))

if _abi_version() != ABI_VERSION:
    raise OSError(f"libghostcore ABI {_abi_version()} != {ABI_VERSION} of these bindings")
for _struct, _default in ((ModelParams, _model_default_params), (CtxParams, _ctx_default_params),
                          (GenerateParams, _generate_default_params)):
    if _default().struct_size != ctypes.sizeof(_struct):
        raise OSError(f"{_struct.__name__}: ctypes layout ({ctypes.sizeof(_struct)} bytes) does "
                      f"not match the library ({_default().struct_size} bytes)")


class GhostError(Exception):
    def __init__(self, what, status):
        self.status = status
        super().__init__(f"{what}: {_status_name(status).decode()}: "
                         f"{_last_error().decode(errors='replace')}")


def _check(status, what):
    if status != GC_OK:
        raise GhostError(what, status)


class Model:
    def __init__(self, path):
        handle = _p()
        _check(_model_load(os.fsencode(path), None, ctypes.byref(handle)), "gc_model_load")
        self._handle = handle

    def close(self):
        if self._handle:
            _model_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self):
        info = ModelInfo(struct_size=ctypes.sizeof(ModelInfo))
        _check(_model_get_info(self._handle, ctypes.byref(info)), "gc_model_get_info")
        return info

    def tokenize(self, text, add_special=True, parse_special=True):
        data = text if isinstance(text, bytes) else text.encode()
        n = ctypes.c_size_t(0)
        status = _tokenize(self._handle, data, len(data), add_special, parse_special, None, 0,
                           ctypes.byref(n))
        if status not in (GC_OK, GC_ERR_BUFFER_TOO_SMALL):
            _check(status, "gc_tokenize")
        out = (gc_token * max(n.value, 1))()
        _check(_tokenize(self._handle, data, len(data), add_special, parse_special, out, n.value,
                         ctypes.byref(n)), "gc_tokenize")
        return list(out[:n.value])

    def token_to_piece(self, token, special=True):
        """The bytes of one token (may be part of a UTF-8 sequence)."""
        n = ctypes.c_size_t(0)
        status = _token_to_piece(self._handle, token, special, None, 0, ctypes.byref(n))
        if status not in (GC_OK, GC_ERR_BUFFER_TOO_SMALL):
            _check(status, "gc_token_to_piece")
        buf = ctypes.create_string_buffer(n.value + 1)
        _check(_token_to_piece(self._handle, token, special, buf, len(buf), ctypes.byref(n)),
               "gc_token_to_piece")
        return buf.raw[:n.value]

    def detokenize(self, tokens, remove_special=False):
        """The bytes of a token sequence."""
        arr = (gc_token * max(len(tokens), 1))(*tokens)
        n = ctypes.c_size_t(0)
        status = _detokenize(self._handle, arr, len(tokens), remove_special, None, 0,
                             ctypes.byref(n))
        if status not in (GC_OK, GC_ERR_BUFFER_TOO_SMALL):
            _check(status, "gc_detokenize")
        buf = ctypes.create_string_buffer(n.value + 1)
        _check(_detokenize(self._handle, arr, len(tokens), remove_special, buf, len(buf),
                           ctypes.byref(n)), "gc_detokenize")
        return buf.raw[:n.value]


class Context:
    def __init__(self, model):
        handle = _p()
        _check(_ctx_new(model._handle, None, ctypes.byref(handle)), "gc_ctx_new")
        self._handle = handle
        self._model = model

    def close(self):
        if self._handle:
            _ctx_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def generate(self, prompt, on_text, max_tokens=32, temperature=0.0):
        """Calls on_text(str) with decoded text as it is generated; returns GenerateStats.
        on_text returning False stops generation."""
        params = _generate_default_params()
        params.max_tokens = max_tokens
        params.temperature = temperature
        stats = GenerateStats(struct_size=ctypes.sizeof(GenerateStats))
        pending = bytearray()  # a piece may end inside a UTF-8 sequence

        def on_piece(piece, length, token, user_data):
            pending.extend(ctypes.string_at(piece, length))
            try:
                text = pending.decode()
            except UnicodeDecodeError:
                return True
            pending.clear()
            return on_text(text) is not False

        callback = TOKEN_CALLBACK(on_piece)  # kept alive for the call
        _check(_generate(self._handle, prompt.encode(), ctypes.byref(params), callback, None,
                         ctypes.byref(stats)), "gc_generate")
        return stats
