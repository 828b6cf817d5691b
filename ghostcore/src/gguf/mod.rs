//! GGUF: the model file format. A zero-copy validating reader and a writer.

mod error;
mod placement;
mod reader;
mod value;
mod writer;

pub use error::GgufError;
pub use placement::{anon_huge_page_bytes, Placement, WeightResidency, HUGE_PAGE_BYTES};
pub(crate) use placement::{reason_not_to_copy, HugePageCopy};
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
pub use value::{Array, Value, ValueType};
pub use writer::{tensor_bytes, GgufWriter, WriterTensor};

#[cfg(test)]
mod tests;
