//! GGUF writer: metadata in insertion order, tensors laid out in order, each padded to the
//! alignment, exactly as ggml's own writer does, so read → write reproduces a file byte for
//! byte.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::error::GgufError;
use super::reader::{align_up, GgufFile, DEFAULT_ALIGNMENT, MAX_DIMS};
use super::value::{Array, Value};
use crate::quant::GgmlType;

/// A tensor to be written; the data may be borrowed (e.g. from another file's map).
#[derive(Clone, Debug)]
pub struct WriterTensor<'a> {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Cow<'a, [u8]>,
}

#[derive(Clone, Debug)]
pub struct GgufWriter<'a> {
    pub version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<WriterTensor<'a>>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A writer holding everything `file` holds, tensors borrowed from its map.
    pub fn from_file(file: &'a GgufFile) -> Self {
        let mut w = GgufWriter::new();
        w.version = file.version;
        w.metadata = file.metadata().to_vec();
        for t in file.tensors() {
            w.tensors.push(WriterTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
                data: Cow::Borrowed(file.tensor_data(t)),
            });
        }
        w
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn tensors(&self) -> &[WriterTensor<'a>] {
        &self.tensors
    }

    pub fn tensors_mut(&mut self) -> &mut Vec<WriterTensor<'a>> {
        &mut self.tensors
    }

    /// Set a key, replacing its value in place if present (file order is kept).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key, value));
        }
    }

    pub fn set_str(&mut self, key: impl Into<String>, v: impl Into<String>) {
        self.set(key, Value::String(v.into()));
    }

    pub fn set_u32(&mut self, key: impl Into<String>, v: u32) {
        self.set(key, Value::U32(v));
    }

    pub fn set_f32(&mut self, key: impl Into<String>, v: f32) {
        self.set(key, Value::F32(v));
    }

    pub fn remove(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    /// Add a tensor; checks that `data` has exactly the size its type and shape need.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let data = data.into();
        let expected = tensor_bytes(ty, dims).ok_or_else(|| GgufError::Invalid {
            field: format!("tensor {name:?}"),
            offset: 0,
            reason: format!("shape {dims:?} is not valid for type {ty}"),
        })?;
        if expected != data.len() as u64 {
            return Err(GgufError::Invalid {
                field: format!("tensor {name:?}"),
                offset: 0,
                reason: format!(
                    "{} bytes of data, shape {dims:?} of {ty} needs {expected}",
                    data.len()
                ),
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Duplicate {
                what: "tensor",
                name,
            });
        }
        self.tensors.push(WriterTensor {
            name,
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if *a > 0 && a.is_power_of_two() => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Serialize to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment();
        let mut pos: u64 = 0;
        let put = |w: &mut dyn Write, b: &[u8], pos: &mut u64| -> std::io::Result<()> {
            w.write_all(b)?;
            *pos += b.len() as u64;
            Ok(())
        };
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&self.version.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut header, k);
            header.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut header, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset =
                align_up(offset + t.data.len() as u64, align).expect("tensor offsets overflow");
        }
        put(w, &header, &mut pos)?;
        let zeros = vec![0u8; align as usize];
        let pad = align_up(pos, align).unwrap() - pos;
        put(w, &zeros[..pad as usize], &mut pos)?;
        for t in &self.tensors {
            put(w, &t.data, &mut pos)?;
            let pad = align_up(pos, align).unwrap() - pos;
            put(w, &zeros[..pad as usize], &mut pos)?;
        }
        Ok(())
    }

    /// Serialize to a byte vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }

    /// Write to `path` atomically: a temporary file beside it, renamed on success.
    pub fn write_file(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let path = path.as_ref();
        let tmp = path.with_extension(format!(
            "{}.tmp{}",
            path.extension().and_then(|e| e.to_str()).unwrap_or(""),
            std::process::id()
        ));
        let res = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            self.write_to(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match res {
            Ok(()) => std::fs::rename(&tmp, path),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// Bytes a tensor of this type and shape takes, if the shape is valid.
pub fn tensor_bytes(ty: GgmlType, dims: &[u64]) -> Option<u64> {
    if dims.is_empty() || dims.len() > MAX_DIMS as usize || dims.contains(&0) {
        return None;
    }
    let rows = dims[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    ty.row_bytes(dims[0])?.checked_mul(rows)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::String(v) => {
            for s in v {
                put_string(out, s);
            }
        }
        Array::Array(v) => {
            for x in v {
                put_array(out, x);
            }
        }
    }
}
