//! File-level quantization recipes (Q4_K_M: which tensor gets which type).
