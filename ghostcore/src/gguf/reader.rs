//! Zero-copy GGUF reader on a memory map.
//!
//! Every count, length and offset is checked against the bytes that remain before it is
//! used, so a truncated or hostile file gives a typed [`GgufError`] naming the field and its
//! byte offset, never a panic or an allocation sized by an unchecked number.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::error::GgufError;
use super::placement::{reason_not_to_copy, HugePageCopy, Placement, WeightResidency};
use super::value::{Array, Value, ValueType};
use crate::quant::GgmlType;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted in metadata.
const MAX_ARRAY_DEPTH: u32 = 8;

/// Where a tensor lives and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section, as stored.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Length of a row (dims[0]).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
    /// Number of rows (product of dims[1..]).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// The bytes a [`GgufFile`] reads from: a memory map, an anonymous huge-page copy of the
/// file, or an owned buffer (tests, pipes).
enum Backing {
    Mmap(Mmap),
    HugePages(HugePageCopy),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::HugePages(c) => c.bytes(),
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file. Cheap to share: clone the `Arc`.
pub struct GgufFile {
    backing: Backing,
    path: Option<PathBuf>,
    pub version: u32,
    /// Metadata in file order.
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    residency: WeightResidency,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and validate the file at `path` (bytes read from the file map, no copy).
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<GgufFile>, GgufError> {
        Self::open_placed(path, Placement::Mapped)
    }

    /// Map and validate the file at `path`, then keep its bytes where `placement` says
    /// ([`Placement::HugePages`]: a huge-page anonymous copy, or the file map if that copy
    /// cannot be made; [`GgufFile::residency`] tells which).
    pub fn open_placed(
        path: impl AsRef<Path>,
        placement: Placement,
    ) -> Result<Arc<GgufFile>, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Like every mmap-based
        // model loader we rely on the file not being truncated or rewritten while mapped;
        // GGUF files are write-once artefacts.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let mut g = Self::parse(Backing::Mmap(map))?;
        g.path = Some(path.to_path_buf());
        if placement == Placement::HugePages {
            g.move_to_huge_pages();
        }
        Ok(Arc::new(g))
    }

    /// Replaces the file map by a huge-page anonymous copy (offsets are unchanged: the copy
    /// starts with the file's first byte), or records why it stays on the map.
    fn move_to_huge_pages(&mut self) {
        if let Some(why) = reason_not_to_copy(self.bytes().len()) {
            self.residency = WeightResidency::MappedFallback(why);
            return;
        }
        match HugePageCopy::new(self.bytes()) {
            Ok(copy) => {
                // Dropping the file map here unmaps it; its page-cache pages become
                // reclaimable and are not touched again by this file.
                self.backing = Backing::HugePages(copy);
                self.residency = WeightResidency::HugePageCopy;
            }
            Err(e) => self.residency = WeightResidency::MappedFallback(e.to_string()),
        }
    }

    /// Where the bytes live (see [`Placement`]).
    pub fn residency(&self) -> &WeightResidency {
        &self.residency
    }

    /// Parse and validate an in-memory GGUF image.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Arc<GgufFile>, GgufError> {
        Ok(Arc::new(Self::parse(Backing::Owned(bytes))?))
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key).and_then(Value::as_array)
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor, borrowed from the map (validated at open time).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.size as usize]
    }

    /// Look a tensor up by name and borrow its bytes.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))?;
        Ok((info, self.tensor_data(info)))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let bytes = backing.bytes();
        let mut c = Cursor { buf: bytes, pos: 0 };

        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(GgufError::BadMagic { found });
        }
        let version = c.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::UnsupportedVersion {
                    version,
                    hint: "; version 1 used 32-bit counts, convert the file with a current gguf tool",
                })
            }
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(GgufError::UnsupportedVersion {
                    version,
                    hint: "; this looks like a big-endian GGUF, only little-endian files are supported",
                })
            }
            _ => return Err(GgufError::UnsupportedVersion { version, hint: "" }),
        }
        let count_pos = c.pos as u64;
        let n_tensors = c.u64("tensor_count")?;
        let kv_pos = c.pos as u64;
        let n_kv = c.u64("metadata_kv_count")?;
        // Each tensor info takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset).
        c.check_count(n_tensors, 24, "tensor_count", count_pos)?;
        // Each key/value takes at least 8 (key len) + 4 (type) + 1 (smallest value).
        c.check_count(n_kv, 13, "metadata_kv_count", kv_pos)?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key_pos = c.pos as u64;
            let key = c.string(&format!("metadata[{i}].key"))?;
            let field = format!("metadata {key:?}");
            let ty_pos = c.pos as u64;
            let ty_id = c.u32(&field)?;
            let ty = ValueType::from_id(ty_id).ok_or(GgufError::UnknownValueType {
                field: field.clone(),
                offset: ty_pos,
                id: ty_id,
            })?;
            let value = c.value(ty, &field, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Invalid {
                    field: "metadata key".into(),
                    offset: key_pos,
                    reason: format!("duplicate key {key:?}"),
                });
            }
            metadata.push((key, value));
        }

        let alignment = match meta_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                let a = match v {
                    Value::U32(a) => *a as u64,
                    _ => {
                        return Err(GgufError::Metadata {
                            key: "general.alignment".into(),
                            reason: format!("must be a uint32, found {:?}", v.value_type()),
                        })
                    }
                };
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::Metadata {
                        key: "general.alignment".into(),
                        reason: format!("{a} is not a non-zero power of two"),
                    });
                }
                a
            }
        };

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name_pos = c.pos as u64;
            let name = c.string(&format!("tensor[{i}].name"))?;
            let field = format!("tensor {name:?}");
            let dims_pos = c.pos as u64;
            let n_dims = c.u32(&format!("{field} n_dims"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Invalid {
                    field: format!("{field} n_dims"),
                    offset: dims_pos,
                    reason: format!("{n_dims} dimensions (must be 1..={MAX_DIMS})"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut n_elem: u64 = 1;
            for d in 0..n_dims {
                let dpos = c.pos as u64;
                let dim = c.u64(&format!("{field} dims[{d}]"))?;
                if dim == 0 || dim > i64::MAX as u64 {
                    return Err(GgufError::Invalid {
                        field: format!("{field} dims[{d}]"),
                        offset: dpos,
                        reason: format!("dimension {dim} out of range"),
                    });
                }
                n_elem = n_elem.checked_mul(dim).ok_or_else(|| GgufError::Invalid {
                    field: format!("{field} dims"),
                    offset: dims_pos,
                    reason: "product of dimensions overflows".into(),
                })?;
                dims.push(dim);
            }
            let ty_pos = c.pos as u64;
            let ty_id = c.u32(&format!("{field} type"))?;
            let ty = GgmlType::from_id(ty_id).ok_or(GgufError::UnknownTensorType {
                field: field.clone(),
                offset: ty_pos,
                id: ty_id,
            })?;
            let row_bytes = ty.row_bytes(dims[0]).ok_or_else(|| GgufError::Invalid {
                field: format!("{field} dims[0]"),
                offset: dims_pos,
                reason: format!(
                    "row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    ty,
                    ty.block_size()
                ),
            })?;
            let size =
                row_bytes
                    .checked_mul(n_elem / dims[0])
                    .ok_or_else(|| GgufError::Invalid {
                        field: format!("{field} dims"),
                        offset: dims_pos,
                        reason: "tensor byte size overflows".into(),
                    })?;
            let off_pos = c.pos as u64;
            let offset = c.u64(&format!("{field} offset"))?;
            if offset % alignment != 0 {
                let _ = off_pos;
                return Err(GgufError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Invalid {
                    field: "tensor name".into(),
                    offset: name_pos,
                    reason: format!("duplicate tensor {name:?}"),
                });
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }

        let file_len = bytes.len() as u64;
        let data_offset = align_up(c.pos as u64, alignment).ok_or(GgufError::Invalid {
            field: "data section".into(),
            offset: c.pos as u64,
            reason: "offset overflows".into(),
        })?;
        if data_offset > file_len && !tensors.is_empty() {
            return Err(GgufError::Truncated {
                field: "data section".into(),
                offset: c.pos as u64,
                needed: data_offset - c.pos as u64,
                available: file_len - c.pos as u64,
            });
        }
        for t in &tensors {
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.size));
            match (start, end) {
                (Some(_), Some(e)) if e <= file_len => {}
                _ => {
                    return Err(GgufError::TensorOutOfBounds {
                        name: t.name.clone(),
                        start: data_offset.saturating_add(t.offset),
                        end: data_offset.saturating_add(t.offset).saturating_add(t.size),
                        file_len,
                    })
                }
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.size > b.offset && a.size > 0 && b.size > 0 {
                return Err(GgufError::Overlap {
                    a: a.name.clone(),
                    b: b.name.clone(),
                });
            }
        }

        Ok(GgufFile {
            path: None,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
            residency: match backing {
                Backing::Mmap(_) => WeightResidency::Mapped,
                Backing::HugePages(_) => WeightResidency::HugePageCopy,
                Backing::Owned(_) => WeightResidency::Buffer,
            },
            backing,
        })
    }
}

pub(crate) fn align_up(x: u64, a: u64) -> Option<u64> {
    let r = x % a;
    if r == 0 {
        Some(x)
    } else {
        x.checked_add(a - r)
    }
}

/// Bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                field: field.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, field)?);
        Ok(a)
    }

    fn u32(&mut self, field: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }

    /// Fail unless `count` items of at least `min_size` bytes could fit in what remains.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        field: &str,
        offset: u64,
    ) -> Result<(), GgufError> {
        if count.saturating_mul(min_size) > self.remaining() {
            return Err(GgufError::AbsurdCount {
                field: field.to_string(),
                offset,
                count,
            });
        }
        Ok(())
    }

    fn string(&mut self, field: &str) -> Result<String, GgufError> {
        let len_pos = self.pos as u64;
        let len = self.u64(field)?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                field: format!("{field} (string of {len} bytes)"),
                offset: len_pos,
                needed: len,
                available: self.remaining(),
            });
        }
        let start = self.pos as u64;
        let b = self.take(len, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| GgufError::BadUtf8 {
            field: field.to_string(),
            offset: start,
        })
    }

    fn value(&mut self, ty: ValueType, field: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(field)?)),
            ValueType::Bool => {
                let pos = self.pos as u64;
                match self.arr::<1>(field)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::Invalid {
                            field: field.to_string(),
                            offset: pos,
                            reason: format!("bool byte {b} is neither 0 nor 1"),
                        })
                    }
                }
            }
            ValueType::String => Value::String(self.string(field)?),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(field)?)),
            ValueType::Array => Value::Array(self.array(field, depth)?),
        })
    }

    fn array(&mut self, field: &str, depth: u32) -> Result<Array, GgufError> {
        let pos = self.pos as u64;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::Invalid {
                field: field.to_string(),
                offset: pos,
                reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            });
        }
        let et_id = self.u32(field)?;
        let et = ValueType::from_id(et_id).ok_or(GgufError::UnknownValueType {
            field: format!("{field} element type"),
            offset: pos,
            id: et_id,
        })?;
        let n_pos = self.pos as u64;
        let n = self.u64(field)?;
        self.check_count(
            n,
            et.min_encoded_size(),
            &format!("{field} array length"),
            n_pos,
        )?;
        let n = n as usize;
        macro_rules! prim {
            ($variant:ident, $t:ty) => {{
                const SZ: usize = std::mem::size_of::<$t>();
                let raw = self.take((n * SZ) as u64, field)?;
                Array::$variant(
                    raw.chunks_exact(SZ)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            }};
        }
        Ok(match et {
            ValueType::U8 => Array::U8(self.take(n as u64, field)?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n as u64, field)?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::U16 => prim!(U16, u16),
            ValueType::I16 => prim!(I16, i16),
            ValueType::U32 => prim!(U32, u32),
            ValueType::I32 => prim!(I32, i32),
            ValueType::F32 => prim!(F32, f32),
            ValueType::U64 => prim!(U64, u64),
            ValueType::I64 => prim!(I64, i64),
            ValueType::F64 => prim!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    match self.value(ValueType::Bool, field, depth)? {
                        Value::Bool(b) => v.push(b),
                        _ => unreachable!("bool value"),
                    }
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(field)?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array(field, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}
