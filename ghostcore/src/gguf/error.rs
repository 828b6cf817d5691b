//! Typed errors of the GGUF reader: each names the field and the byte offset at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("truncated GGUF: {field} at byte offset {offset} needs {needed} bytes, only {available} remain")]
    Truncated {
        field: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("not a GGUF file: magic at byte offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version} at byte offset 4 (supported: 2, 3){hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },
    #[error("{field} at byte offset {offset}: count {count} is larger than the file could hold")]
    AbsurdCount {
        field: String,
        offset: u64,
        count: u64,
    },
    #[error("{field} at byte offset {offset}: unknown metadata value type id {id}")]
    UnknownValueType { field: String, offset: u64, id: u32 },
    #[error("{field} at byte offset {offset}: unknown or removed tensor type id {id}")]
    UnknownTensorType { field: String, offset: u64, id: u32 },
    #[error("{field} at byte offset {offset}: string is not valid UTF-8")]
    BadUtf8 { field: String, offset: u64 },
    #[error("{field} at byte offset {offset}: {reason}")]
    Invalid {
        field: String,
        offset: u64,
        reason: String,
    },
    #[error(
        "tensor {name}: data [{start}, {end}) lies past the end of the file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("tensor {name}: data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensors {a} and {b} overlap in the data section")]
    Overlap { a: String, b: String },
    #[error("duplicate {what} {name:?}")]
    Duplicate { what: &'static str, name: String },
    #[error("metadata key {key:?}: {reason}")]
    Metadata { key: String, reason: String },
    #[error("no tensor named {0:?}")]
    MissingTensor(String),
}
