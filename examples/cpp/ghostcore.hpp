// ghostcore.hpp: a small header-only C++11 RAII wrapper over the GhostCore C API.
//
//   ghostcore::Model model("model.gguf");
//   ghostcore::Context ctx(model);
//   ctx.generate("Hello", params, [](const std::string &piece) { std::cout << piece; return true; });
//
// Errors become ghostcore::Error (with the gc_status and gc_last_error() message).
// Handles are move-only and freed in their destructors.
#ifndef GHOSTCORE_HPP
#define GHOSTCORE_HPP

#include "ghostcore.h"

#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ghostcore {

class Error : public std::runtime_error {
  public:
    Error(const std::string &what, gc_status status)
        : std::runtime_error(what + ": " + gc_status_name(status) + ": " + gc_last_error()),
          status_(status) {}
    gc_status status() const { return status_; }

  private:
    gc_status status_;
};

inline void check(gc_status status, const char *what) {
    if (status != GC_OK) {
        throw Error(what, status);
    }
}

class Model {
  public:
    explicit Model(const std::string &path, const gc_model_params *params = nullptr) {
        if (gc_abi_version() != GHOSTCORE_ABI_VERSION) {
            throw std::runtime_error("libghostcore ABI does not match ghostcore.h");
        }
        check(gc_model_load(path.c_str(), params, &model_), "gc_model_load");
    }
    ~Model() { gc_model_free(model_); }
    Model(Model &&other) noexcept : model_(other.model_) { other.model_ = nullptr; }
    Model &operator=(Model &&other) noexcept {
        std::swap(model_, other.model_);
        return *this;
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    gc_model_info info() const {
        gc_model_info info;
        info.struct_size = sizeof info;
        check(gc_model_get_info(model_, &info), "gc_model_get_info");
        return info;
    }

    std::vector<gc_token> tokenize(const std::string &text, bool add_special = true,
                                   bool parse_special = true) const {
        std::vector<gc_token> tokens(text.size() + 2);
        size_t n = 0;
        gc_status st = gc_tokenize(model_, text.data(), text.size(), add_special, parse_special,
                                   tokens.data(), tokens.size(), &n);
        if (st == GC_ERR_BUFFER_TOO_SMALL) {
            tokens.resize(n);
            st = gc_tokenize(model_, text.data(), text.size(), add_special, parse_special,
                             tokens.data(), tokens.size(), &n);
        }
        check(st, "gc_tokenize");
        tokens.resize(n);
        return tokens;
    }

    std::string detokenize(const std::vector<gc_token> &tokens, bool remove_special = true) const {
        std::string text(64, '\0');
        size_t n = 0;
        gc_status st = gc_detokenize(model_, tokens.data(), tokens.size(), remove_special, &text[0],
                                     text.size(), &n);
        if (st == GC_ERR_BUFFER_TOO_SMALL) {
            text.resize(n + 1);
            st = gc_detokenize(model_, tokens.data(), tokens.size(), remove_special, &text[0],
                               text.size(), &n);
        }
        check(st, "gc_detokenize");
        text.resize(n);
        return text;
    }

    const gc_model *get() const { return model_; }

  private:
    gc_model *model_ = nullptr;
};

class Context {
  public:
    using OnPiece = std::function<bool(const std::string &piece)>;

    explicit Context(const Model &model, const gc_ctx_params *params = nullptr) {
        check(gc_ctx_new(model.get(), params, &ctx_), "gc_ctx_new");
    }
    ~Context() { gc_ctx_free(ctx_); }
    Context(Context &&other) noexcept : ctx_(other.ctx_) { other.ctx_ = nullptr; }
    Context &operator=(Context &&other) noexcept {
        std::swap(ctx_, other.ctx_);
        return *this;
    }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;

    void reset() { check(gc_ctx_reset(ctx_), "gc_ctx_reset"); }

    // Generates from `prompt`, calling `on_piece` with each piece of text; it returns
    // false to stop. An exception thrown by `on_piece` stops generation and is rethrown
    // here (it never crosses the C library).
    gc_generate_stats generate(const std::string &prompt, const gc_generate_params &params,
                               const OnPiece &on_piece) {
        GenerateState state{&on_piece, nullptr};
        gc_generate_stats stats;
        stats.struct_size = sizeof stats;
        gc_status st = gc_generate(ctx_, prompt.c_str(), &params, &Context::trampoline, &state,
                                   &stats);
        if (state.error) {
            std::rethrow_exception(state.error);
        }
        check(st, "gc_generate");
        return stats;
    }

    gc_ctx *get() { return ctx_; }

  private:
    struct GenerateState {
        const OnPiece *on_piece;
        std::exception_ptr error;
    };

    static bool trampoline(const char *piece, size_t len, gc_token, void *user_data) {
        auto *s = static_cast<GenerateState *>(user_data);
        try {
            return (*s->on_piece)(std::string(piece, len));
        } catch (...) {
            s->error = std::current_exception();
            return false;
        }
    }

    gc_ctx *ctx_ = nullptr;
};

}  // namespace ghostcore

#endif  // GHOSTCORE_HPP
