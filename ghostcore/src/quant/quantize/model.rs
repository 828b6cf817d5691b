//! Whole-file quantization: read a GGUF, choose types with a recipe, convert tensor by
//! tensor (rows in parallel), write a GGUF laid out as llama-quantize lays it out.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{can_quantize_to, quantize_row};
use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::recipe::{plan_file, Ftype};
use crate::quant::GgmlType;
use crate::{bail, Error, Result};

/// `general.quantization_version` written by current ggml (GGML_QNT_VERSION).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Metadata keys of split files, which a single-file output must not carry.
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

/// Reported after each tensor is done.
#[derive(Clone, Debug)]
pub struct QuantizeProgress<'a> {
    /// Tensors finished so far (1-based count, including this one).
    pub done: usize,
    pub total: usize,
    pub name: &'a str,
    pub source: GgmlType,
    pub target: GgmlType,
    /// Elements converted so far over all tensors, and in the whole model.
    pub elements_done: u64,
    pub elements_total: u64,
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorOutcome {
    pub name: String,
    pub dims: Vec<u64>,
    pub source: GgmlType,
    pub target: GgmlType,
    /// The recipe's first choice did not fit the row length.
    pub fallback: bool,
    pub bytes: u64,
}

/// Totals for a quantized model, tensors in output order.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeSummary {
    pub ftype: Ftype,
    pub tensors: Vec<TensorOutcome>,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Quantize the model at `input` to `ftype`, writing `output` atomically. Uses `threads`
/// worker threads (0 means all available cores); `on_progress` is called after each
/// tensor.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    ftype: Ftype,
    threads: usize,
    on_progress: &mut dyn FnMut(&QuantizeProgress),
) -> Result<QuantizeSummary> {
    let file = GgufFile::open(input)?;
    let (writer, summary) = quantize_gguf(&file, ftype, threads, on_progress)?;
    writer.write_file(output).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("writing {}: {e}", output.display()),
        ))
    })?;
    Ok(summary)
}

/// Quantize an open file in memory: the returned writer borrows unchanged tensors from
/// `file` and owns the converted ones.
pub fn quantize_gguf<'a>(
    file: &'a GgufFile,
    ftype: Ftype,
    threads: usize,
    on_progress: &mut dyn FnMut(&QuantizeProgress),
) -> Result<(GgufWriter<'a>, QuantizeSummary)> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let choices = plan_file(file, ftype)?;

    let mut writer = GgufWriter::new();
    writer.version = file.version;
    for (k, v) in file.metadata() {
        writer.set(k.clone(), v.clone());
    }
    // llama.cpp's gguf_set_val_* removes an existing key and appends it.
    for (key, value) in [
        ("general.quantization_version", QUANTIZATION_VERSION),
        ("general.file_type", ftype.file_type_id()),
    ] {
        writer.remove(key);
        writer.set_u32(key, value);
    }
    for key in SPLIT_KEYS {
        writer.remove(key);
    }

    let elements_total: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let mut elements_done = 0u64;
    let mut outcomes = Vec::with_capacity(choices.len());
    let mut input_bytes = 0u64;
    let mut output_bytes = 0u64;
    for (n, choice) in choices.iter().enumerate() {
        let info = &file.tensors()[choice.index];
        let src = file.tensor_data(info);
        let data: Cow<'a, [u8]> = if choice.target == choice.source {
            Cow::Borrowed(src)
        } else {
            Cow::Owned(convert_tensor(
                &info.name,
                info.ty,
                src,
                choice.target,
                info.row_len(),
                threads,
            )?)
        };
        input_bytes += src.len() as u64;
        output_bytes += data.len() as u64;
        outcomes.push(TensorOutcome {
            name: info.name.clone(),
            dims: info.dims.clone(),
            source: info.ty,
            target: choice.target,
            fallback: choice.fallback,
            bytes: data.len() as u64,
        });
        writer.add_tensor(info.name.clone(), choice.target, &info.dims, data)?;
        elements_done += info.n_elements();
        on_progress(&QuantizeProgress {
            done: n + 1,
            total: choices.len(),
            name: &info.name,
            source: info.ty,
            target: choice.target,
            elements_done,
            elements_total,
        });
    }
    let summary = QuantizeSummary {
        ftype,
        tensors: outcomes,
        input_bytes,
        output_bytes,
    };
    Ok((writer, summary))
}

/// Convert a whole tensor, rows split over `threads` workers.
fn convert_tensor(
    name: &str,
    source: GgmlType,
    src: &[u8],
    target: GgmlType,
    row_len: u64,
    threads: usize,
) -> Result<Vec<u8>> {
    if !can_quantize_to(target) {
        bail!(Unsupported, "tensor {name}: cannot quantize to {target}");
    }
    let (Some(src_row), Some(dst_row)) = (source.row_bytes(row_len), target.row_bytes(row_len))
    else {
        bail!(
            Format,
            "tensor {name}: rows of {row_len} values do not fit {source} or {target}"
        );
    };
    if src_row == 0 || src.len() as u64 % src_row != 0 {
        bail!(Format, "tensor {name}: data is not a whole number of rows");
    }
    let n_rows = src.len() as u64 / src_row;
    let Some(dst_len) = n_rows
        .checked_mul(dst_row)
        .and_then(|v| usize::try_from(v).ok())
    else {
        bail!(OutOfMemory, "tensor {name}: output size overflows");
    };
    let row_len = usize::try_from(row_len)
        .map_err(|_| Error::Format(format!("tensor {name}: row too long")))?;
    let (src_row, dst_row) = (src_row as usize, dst_row as usize);
    let mut dst = vec![0u8; dst_len];

    let convert_rows = |src_rows: &[u8], dst_rows: &mut [u8], buf: &mut [f32]| -> Result<()> {
        for (s, d) in src_rows
            .chunks_exact(src_row)
            .zip(dst_rows.chunks_exact_mut(dst_row))
        {
            dequantize(source, s, buf)
                .and_then(|()| quantize_row(target, buf, d))
                .map_err(|e| Error::InvalidArgument(format!("tensor {name}: {e}")))?;
        }
        Ok(())
    };

    let threads = threads.clamp(1, n_rows.max(1) as usize);
    if threads == 1 {
        let mut buf = vec![0.0f32; row_len];
        convert_rows(src, &mut dst, &mut buf)?;
        return Ok(dst);
    }
    // Enough chunks that threads finish together, few enough that locking is negligible.
    let rows_per_chunk = (n_rows as usize / (threads * 8)).max(1);
    let jobs = Mutex::new(
        src.chunks(rows_per_chunk * src_row)
            .zip(dst.chunks_mut(rows_per_chunk * dst_row)),
    );
    let failed = AtomicBool::new(false);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut buf = vec![0.0f32; row_len];
                    while !failed.load(Ordering::Relaxed) {
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((s, d)) = job else { break };
                        if let Err(e) = convert_rows(s, d, &mut buf) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Internal(format!("tensor {name}: a worker panicked")))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    Ok(dst)
}

/// One row of `ty` to f32 (ggml's reference dequantization, which llama-quantize uses).
fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    crate::quant::dequantize_row(ty, src, dst)
}
