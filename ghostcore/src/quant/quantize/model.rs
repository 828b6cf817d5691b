//! Whole-file quantization: read a GGUF, choose types with a recipe, convert tensor by
//! tensor (rows in parallel), write a GGUF laid out as llama-quantize lays it out.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{can_quantize_to, quantize_row};
use crate::gguf::{GgufFile, GgufWriter};
use crate::quant::recipe::{plan_file, Ftype, Recipe};
use crate::quant::GgmlType;
use crate::{bail, Error, Result};

/// `general.quantization_version` written by current ggml (GGML_QNT_VERSION).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Metadata keys of split files, which a single-file output must not carry.
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

/// How often progress is reported while a large tensor is being converted.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Reported after each tensor, and every [`PROGRESS_INTERVAL`] or so while one converts.
#[derive(Clone, Debug)]
pub struct QuantizeProgress<'a> {
    /// Tensors finished so far.
    pub done: usize,
    pub total: usize,
    /// The tensor this report is about: just finished (`tensor_finished`) or in progress.
    pub name: &'a str,
    pub tensor_finished: bool,
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

/// Quantize the model at `input` with `recipe` (an [`Ftype`] or a [`Recipe`]), writing
/// `output` atomically. Uses `threads` worker threads (0 means all available cores);
/// `on_progress` is called after each tensor and periodically during large ones.
///
/// The converted tensors are held in memory until the file is written (the input is
/// memory-mapped), so peak memory is about the size of the output.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    recipe: impl Into<Recipe>,
    threads: usize,
    on_progress: &mut dyn FnMut(&QuantizeProgress),
) -> Result<QuantizeSummary> {
    let file = GgufFile::open(input)?;
    let (writer, summary) = quantize_gguf(&file, recipe, threads, on_progress)?;
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
    recipe: impl Into<Recipe>,
    threads: usize,
    on_progress: &mut dyn FnMut(&QuantizeProgress),
) -> Result<(GgufWriter<'a>, QuantizeSummary)> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let recipe = recipe.into();
    let ftype = recipe.ftype;
    let choices = plan_file(file, recipe)?;
    // Fail before any work if a tensor cannot be converted.
    for c in choices.iter().filter(|c| c.target != c.source) {
        if !c.source.is_supported_for_compute() {
            bail!(
                Unsupported,
                "tensor {}: cannot requantize from {} (no dequantizer for it)",
                c.name,
                c.source
            );
        }
        if !can_quantize_to(c.target) {
            bail!(
                Unsupported,
                "tensor {}: cannot quantize to {}",
                c.name,
                c.target
            );
        }
        if c.target.row_bytes(c.dims[0]).is_none() {
            bail!(
                InvalidArgument,
                "tensor {}: rows of {} values are not a whole number of {} blocks",
                c.name,
                c.dims[0],
                c.target
            );
        }
    }

    // Metadata in file order; tensors are added below in the recipe's order.
    let mut writer = GgufWriter::from_file(file);
    writer.tensors_mut().clear();
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
            let mut on_rows = |rows: u64| {
                on_progress(&QuantizeProgress {
                    done: n,
                    total: choices.len(),
                    name: &info.name,
                    tensor_finished: false,
                    source: info.ty,
                    target: choice.target,
                    elements_done: elements_done + rows * info.row_len(),
                    elements_total,
                })
            };
            Cow::Owned(convert_tensor(
                &info.name,
                info.ty,
                src,
                choice.target,
                info.row_len(),
                threads,
                &mut on_rows,
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
            tensor_finished: true,
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

/// Convert a whole tensor, rows split over `threads` workers; `on_rows(rows_done)` is
/// called every [`PROGRESS_INTERVAL`] or so.
fn convert_tensor(
    name: &str,
    source: GgmlType,
    src: &[u8],
    target: GgmlType,
    row_len: u64,
    threads: usize,
    on_rows: &mut dyn FnMut(u64),
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
                .map_err(|e| in_tensor(name, e))?;
        }
        Ok(())
    };

    let threads = threads.clamp(1, n_rows.max(1) as usize);
    // Enough chunks that threads finish together, few enough that locking is negligible.
    let rows_per_chunk = (n_rows as usize / (threads * 8)).max(1);
    let mut chunks = src
        .chunks(rows_per_chunk * src_row)
        .zip(dst.chunks_mut(rows_per_chunk * dst_row));
    if threads == 1 {
        let mut buf = vec![0.0f32; row_len];
        let (mut rows, mut last) = (0u64, Instant::now());
        for (s, d) in chunks {
            convert_rows(s, d, &mut buf)?;
            rows += (s.len() / src_row) as u64;
            if last.elapsed() >= PROGRESS_INTERVAL {
                on_rows(rows);
                last = Instant::now();
            }
        }
        return Ok(dst);
    }
    let jobs = Mutex::new(&mut chunks);
    let failed = AtomicBool::new(false);
    let rows_done = AtomicU64::new(0);
    let exited = AtomicUsize::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let main = std::thread::current();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let main = main.clone();
                scope.spawn(|| -> Result<()> {
                    // Counts this worker out and wakes the reporting thread on every exit,
                    // a panic included.
                    let _exit = ExitSignal {
                        exited: &exited,
                        main,
                    };
                    let mut buf = vec![0.0f32; row_len];
                    let mut result = Ok(());
                    while !failed.load(Ordering::Relaxed) {
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some((s, d)) = job else { break };
                        if let Err(e) = convert_rows(s, d, &mut buf) {
                            failed.store(true, Ordering::Relaxed);
                            result = Err(e);
                            break;
                        }
                        rows_done.fetch_add((s.len() / src_row) as u64, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        // This thread reports progress until the workers are done.
        while exited.load(Ordering::Acquire) < threads {
            std::thread::park_timeout(PROGRESS_INTERVAL);
            if exited.load(Ordering::Acquire) < threads {
                on_rows(rows_done.load(Ordering::Relaxed));
            }
        }
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

/// Dropped when a worker ends: counts it out and wakes the thread waiting for the workers.
struct ExitSignal<'a> {
    exited: &'a AtomicUsize,
    main: std::thread::Thread,
}

impl Drop for ExitSignal<'_> {
    fn drop(&mut self) {
        self.exited.fetch_add(1, Ordering::Release);
        self.main.unpark();
    }
}

/// Name the tensor in an error's message, keeping its kind.
fn in_tensor(name: &str, e: Error) -> Error {
    let tag = |m: String| format!("tensor {name}: {m}");
    match e {
        Error::Unsupported(m) => Error::Unsupported(tag(m)),
        Error::Format(m) => Error::Format(tag(m)),
        Error::InvalidArgument(m) => Error::InvalidArgument(tag(m)),
        Error::Internal(m) => Error::Internal(tag(m)),
        other => other,
    }
}

/// One row of `ty` to f32 (ggml's reference dequantization, which llama-quantize uses).
fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    crate::quant::dequantize_row(ty, src, dst)
}
