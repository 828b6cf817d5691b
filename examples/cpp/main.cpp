// main.cpp: the C++ counterpart of examples/c/simple.c, through the RAII wrapper in
// ghostcore.hpp. Loads a model, generates greedily from a prompt and prints the text.
//
//   simple_cpp [-m MODEL.gguf] [-n N_PREDICT] [PROMPT]
#include "ghostcore.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

static std::string find_model() {
    const char *name = "smollm2-135m-q4_k_m.gguf";
    for (const std::string dir : {"models/", "../shared/models/"}) {
        if (std::ifstream(dir + name).good()) {
            return dir + name;
        }
    }
    return "";
}

int main(int argc, char **argv) {
    std::string model_path;
    std::string prompt = "Hello my name is";
    int n_predict = 32;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "-m" && i + 1 < argc) {
            model_path = argv[++i];
        } else if (arg == "-n" && i + 1 < argc) {
            n_predict = std::atoi(argv[++i]);
        } else {
            prompt = arg;
        }
    }
    if (model_path.empty()) {
        model_path = find_model();
    }
    if (model_path.empty() || n_predict <= 0) {
        std::cerr << "usage: " << argv[0] << " [-m MODEL.gguf] [-n N_PREDICT>0] [PROMPT]\n";
        return 1;
    }
    try {
        ghostcore::Model model(model_path);
        gc_model_info info = model.info();
        std::cerr << "model: " << info.name << " (" << info.architecture << "), "
                  << info.n_params << " parameters\n";
        std::cerr << "prompt: " << model.tokenize(prompt).size() << " tokens\n";

        ghostcore::Context ctx(model);
        gc_generate_params params = gc_generate_default_params();
        params.max_tokens = static_cast<uint32_t>(n_predict);
        params.temperature = 0.0f;  // greedy
        std::cout << prompt;
        gc_generate_stats stats = ctx.generate(prompt, params, [](const std::string &piece) {
            std::cout << piece << std::flush;
            return true;
        });
        std::cout << "\n";
        std::cerr << "generated " << stats.n_generated_tokens << " tokens, "
                  << stats.generate_tokens_per_second << " tok/s\n";
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
