#!/usr/bin/env python3
"""The Python counterpart of examples/c/simple.c (ctypes, no dependencies).

    python3 simple.py [-m MODEL.gguf] [-n N_PREDICT] [PROMPT]
"""

import argparse
import sys
from pathlib import Path

import ghostcore


def find_model():
    name = "smollm2-135m-q4_k_m.gguf"
    for d in ("models", "../shared/models"):
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", dest="model", default=None)
    ap.add_argument("-n", dest="n_predict", type=int, default=32)
    ap.add_argument("prompt", nargs="?", default="Hello my name is")
    args = ap.parse_args()
    model_path = args.model or find_model()
    if model_path is None or args.n_predict <= 0:
        ap.error("no model found (-m) or -n not positive")
    try:
        with ghostcore.Model(model_path) as model:
            info = model.info()
            print(f"model: {info.name.decode()} ({info.architecture.decode()}), "
                  f"{info.n_params} parameters", file=sys.stderr)
            print(f"prompt: {len(model.tokenize(args.prompt))} tokens", file=sys.stderr)
            with ghostcore.Context(model) as ctx:
                sys.stdout.write(args.prompt)
                stats = ctx.generate(args.prompt,
                                     lambda text: sys.stdout.write(text) and sys.stdout.flush(),
                                     max_tokens=args.n_predict)
                sys.stdout.write("\n")
                print(f"generated {stats.n_generated_tokens} tokens, "
                      f"{stats.generate_tokens_per_second:.1f} tok/s", file=sys.stderr)
    except ghostcore.GhostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
