//! The C ABI of GhostCore (see include/ghostcore.h). Filled by the C ABI work.
