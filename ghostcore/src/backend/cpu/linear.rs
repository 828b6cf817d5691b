//! Linear layers (`x · Wᵀ`) split over the thread pool, in two arithmetic modes
//! ([`ActMath`]):
//! - quantized: activations are quantized once per row to the weight type's vec-dot type
//!   ([`quantize_rows`]); the weight rows are split into chunks handed out by the pool's
//!   atomic counter, each computed by the single-threaded drivers of `crate::quant`
//!   (decode, small batches);
//! - exact: f32 activations against dequantized weights through the register-tiled GEMM of
//!   [`super::gemm`] (prompt batches).

use std::cell::RefCell;
use std::sync::Mutex;

use super::gemm::{self, PackedActs};
use crate::model::Weight;
use crate::quant::{self, GgmlType};
use crate::threadpool::{DisjointSlice, ThreadPool};
use crate::{Error, Result};

/// Activation rows prepared for a projection: quantized for one vec-dot type
/// ([`ActMath::Quantized`]) or packed for the f32 GEMM ([`ActMath::Exact`]).
#[derive(Debug, Default)]
pub struct QuantizedActs {
    /// The rows packed for [`gemm::gemm`] (valid when `packed.m() > 0`).
    pub packed: PackedActs,
    pub ty: Option<GgmlType>,
    pub n_cols: usize,
    pub m: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
}

impl QuantizedActs {
    pub fn row(&self, j: usize) -> &[u8] {
        &self.data[j * self.row_bytes..(j + 1) * self.row_bytes]
    }

    /// The `m` quantized rows.
    pub fn rows(&self) -> &[u8] {
        &self.data[..self.m * self.row_bytes]
    }
}

/// The vec-dot type activations must be quantized to for weights of type `ty`.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    quant::vec_dot_type(ty)
}

/// First error raised by any participant of a parallel section.
#[derive(Default)]
pub(crate) struct ErrorSlot(Mutex<Option<Error>>);

impl ErrorSlot {
    pub(crate) fn record(&self, r: Result<()>) {
        if let Err(e) = r {
            let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                *g = Some(e);
            }
        }
    }

    pub(crate) fn into_result(self) -> Result<()> {
        match self.0.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Quantizes `m` rows of `n_cols` floats (`x.len() >= m * n_cols`) to `vdt`, in parallel.
pub fn quantize_rows(
    pool: &ThreadPool,
    vdt: GgmlType,
    x: &[f32],
    n_cols: usize,
    m: usize,
    dst: &mut QuantizedActs,
) -> Result<()> {
    let Some(row_bytes) = quant::row_bytes(vdt, n_cols) else {
        crate::bail!(
            InvalidArgument,
            "{n_cols} activations are not whole {vdt} blocks"
        );
    };
    dst.ty = Some(vdt);
    dst.n_cols = n_cols;
    dst.m = m;
    dst.row_bytes = row_bytes;
    if dst.data.len() < m * row_bytes {
        dst.data.resize(m * row_bytes, 0);
    }
    if m == 1 {
        return quant::quantize_activations(vdt, &x[..n_cols], &mut dst.data[..row_bytes]);
    }
    let out = DisjointSlice::new(&mut dst.data[..m * row_bytes]);
    let errors = ErrorSlot::default();
    pool.for_each_chunk(m, 4, |_, rows| {
        for j in rows {
            // SAFETY: each row index j is handled by exactly one chunk.
            let d = unsafe { out.range_mut(j * row_bytes..(j + 1) * row_bytes) };
            errors.record(quant::quantize_activations(
                vdt,
                &x[j * n_cols..(j + 1) * n_cols],
                d,
            ));
        }
    });
    errors.into_result()
}

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[j * w.n_rows + r] = w.row(r) · act.row(j)` for all rows of `w` and `j < acts.m`.
pub fn matmul(
    pool: &ThreadPool,
    w: &Weight,
    w_bytes: &[u8],
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<()> {
    let m = acts.m;
    let n_rows = w.n_rows;
    if out.len() < m * n_rows {
        crate::bail!(Internal, "matmul output buffer too small");
    }
    let dst = DisjointSlice::new(&mut out[..m * n_rows]);
    let act_bytes = acts.rows();
    let errors = ErrorSlot::default();
    if m == 1 {
        let chunk = pool.chunk_size(n_rows, 32, 8);
        pool.for_each_chunk(n_rows, chunk, |_, rows| {
            // SAFETY: chunks of rows are disjoint.
            let o = unsafe { dst.range_mut(rows.clone()) };
            errors.record(quant::matvec(w.ty, w.n_cols, w_bytes, rows, act_bytes, o));
        });
        return errors.into_result();
    }
    let chunk = pool.chunk_size(n_rows, 16, 16).min(64);
    pool.for_each_chunk(n_rows, chunk, |_, rows| {
        TILE.with(|t| {
            let mut t = t.borrow_mut();
            let len = rows.len();
            if t.len() < len * m {
                t.resize(len * m, 0.0);
            }
            let r = quant::matmul(
                w.ty,
                w.n_cols,
                w_bytes,
                rows.clone(),
                act_bytes,
                m,
                &mut t[..len * m],
                len,
            );
            if r.is_ok() {
                for j in 0..m {
                    // SAFETY: (row j, this chunk's rows) ranges are disjoint across chunks.
                    let o =
                        unsafe { dst.range_mut(j * n_rows + rows.start..j * n_rows + rows.end) };
                    o.copy_from_slice(&t[j * len..(j + 1) * len]);
                }
            }
            errors.record(r);
        });
    });
    errors.into_result()
}

/// `out[j * w.n_rows + r] = dequant(w.row(r)) · x[j]` with f32 activations (`m` rows of
/// `w.n_cols`): exact-math products, used for prefill to stay close to llama.cpp's batched
/// results. `x` is packed into `packed` first, unless `reuse` is set and `packed` already holds
/// these `m` rows (see [`project`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32(
    pool: &ThreadPool,
    w: &Weight,
    w_bytes: &[u8],
    x: &[f32],
    m: usize,
    packed: &mut PackedActs,
    reuse: bool,
    out: &mut [f32],
) -> Result<()> {
    let (n_rows, n_cols) = (w.n_rows, w.n_cols);
    if out.len() < m * n_rows || x.len() < m * n_cols {
        crate::bail!(Internal, "matmul_f32 buffers too small");
    }
    if !(reuse && packed.m() == m && packed.k() == n_cols) {
        packed.pack_parallel(pool, x, m, n_cols)?;
    }
    gemm::gemm(pool, w.ty, w_bytes, n_rows, packed, out, n_rows)
}

/// How a projection treats its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActMath {
    /// Quantize activations to the weight's vec-dot type (llama.cpp's CPU math; fastest).
    Quantized,
    /// Keep activations in f32 against dequantized weights.
    Exact,
}

/// `out = x · wᵀ` for `m` rows of `n_cols` floats. `x` is quantized (or, with
/// [`ActMath::Exact`], packed) into `acts` first, unless `reuse` is set and `acts` already
/// holds these `m` rows in the form this math needs (the caller guarantees it is the same `x`).
#[allow(clippy::too_many_arguments)]
pub fn project(
    pool: &ThreadPool,
    math: ActMath,
    w: &Weight,
    w_bytes: &[u8],
    x: &[f32],
    m: usize,
    acts: &mut QuantizedActs,
    reuse: bool,
    out: &mut [f32],
) -> Result<()> {
    match math {
        ActMath::Exact => {
            acts.ty = None;
            matmul_f32(pool, w, w_bytes, x, m, &mut acts.packed, reuse, out)
        }
        ActMath::Quantized => {
            acts.packed.invalidate();
            let vdt = vec_dot_type(w.ty);
            if !(reuse && acts.ty == Some(vdt) && acts.m == m && acts.n_cols == w.n_cols) {
                quantize_rows(pool, vdt, x, w.n_cols, m, acts)?;
            }
            matmul(pool, w, w_bytes, acts, out)
        }
    }
}
