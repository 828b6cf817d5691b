//! The crate-wide error type. Each variant maps to one `gc_status` code of the C ABI.

use crate::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed or hostile GGUF file (or sidecar).
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file is well-formed but describes something this engine does not run
    /// (architecture, tensor type, tokenizer model).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Well-formed GGUF whose content is wrong for its purpose (missing tensor, bad shape).
    #[error("invalid model: {0}")]
    Format(String),
    /// A caller error: out-of-range token, bad parameter, context full.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `bail!(Variant, "fmt", args)` returns `Err(Error::Variant(format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($variant:ident, $($arg:tt)*) => {
        return Err($crate::Error::$variant(format!($($arg)*)))
    };
}
