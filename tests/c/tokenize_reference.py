#!/usr/bin/env python3
"""Tokenization through the C ABI (gc_tokenize, gc_token_to_piece, gc_detokenize, via the
ctypes bindings of examples/python) against llama.cpp's llama-tokenize output in
tests/data/reference/tokenize_<model>.json, for every model present:

- ids with parse_special on and off equal llama.cpp's;
- the pieces of those ids (special rendered) concatenate to the prompt bytes, and
  gc_detokenize(ids) gives them too, for models without a space prefix or BOS;
- the buffer protocol: a buffer one short gives GC_ERR_BUFFER_TOO_SMALL with the needed
  size and leaves the buffer untouched.

    tokenize_reference.py MODEL_DIR_OR_FILE...     (a model absent from all is skipped)
Prints "tokenize_reference: N passed, N failed".
"""

import ctypes
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "python"))
import ghostcore  # noqa: E402

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAILED: {what}", file=sys.stderr)


def run_model(path, ref):
    with ghostcore.Model(path) as model:
        info = model.info()
        check(info.n_vocab == ref["vocab_size"], f"n_vocab {info.n_vocab} != {ref['vocab_size']}")
        plain = not ref["add_bos_token_metadata"] and not ref["add_space_prefix"]
        for case in ref["cases"]:
            text = bytes.fromhex(case["utf8_hex"])
            name = f"{Path(path).name}/{case['name']}"
            got = model.tokenize(text, add_special=True, parse_special=True)
            check(got == case["ids_parse_special"], f"{name}: parse_special ids {got}")
            got_raw = model.tokenize(text, add_special=True, parse_special=False)
            check(got_raw == case["ids_no_parse_special"], f"{name}: no-parse ids {got_raw}")
            if plain:
                pieces = b"".join(model.token_to_piece(t, special=True) for t in got)
                check(pieces == text, f"{name}: pieces {pieces!r} != {text!r}")
                check(model.detokenize(got) == text, f"{name}: detokenize round trip")
        # The buffer protocol on the longest case.
        case = max(ref["cases"], key=lambda c: len(c["ids_parse_special"]))
        text = bytes.fromhex(case["utf8_hex"])
        need = len(case["ids_parse_special"])
        out = (ghostcore.gc_token * need)(*([-7] * need))
        n = ctypes.c_size_t(0)
        st = ghostcore._tokenize(model._handle, text, len(text), True, True, out, need - 1,
                                 ctypes.byref(n))
        check(st == ghostcore.GC_ERR_BUFFER_TOO_SMALL and n.value == need,
              f"too-small buffer: status {st}, n {n.value}, need {need}")
        check(list(out) == [-7] * need, "too-small buffer was written to")


def main():
    dirs = [Path(a) for a in sys.argv[1:]]
    ran = 0
    for ref_file in sorted((ROOT / "tests/data/reference").glob("tokenize_*.json")):
        ref = json.loads(ref_file.read_text())
        model_name = Path(ref["model"]).name
        found = next((d / model_name for d in dirs if (d / model_name).is_file()), None)
        if found is None:
            print(f"SKIPPED {model_name}: not in {[str(d) for d in dirs]}")
            continue
        run_model(str(found), ref)
        ran += 1
    check(ran > 0, "no model found for any reference file")
    print(f"tokenize_reference: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
