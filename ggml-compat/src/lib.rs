//! libllama-compatible exports over GhostCore: planned (see README, roadmap).
