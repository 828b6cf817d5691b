//! backend (to be filled)

#[cfg(feature = "cuda")]
pub mod cuda;
