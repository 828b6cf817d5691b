//! sparsity (to be filled)
