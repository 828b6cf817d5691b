//! Quantized matrix-vector and matrix-matrix products split over the thread pool.
//!
//! Activations are quantized once per row to the weight type's vec-dot type
//! ([`quantize_rows`]); the weight rows are then split into chunks handed out by the pool's
//! atomic counter, each chunk computed by the single-threaded kernels of `crate::quant`.

use std::cell::RefCell;

use super::kernels_shim as kernels;
use crate::model::Weight;
use crate::quant::GgmlType;
use crate::threadpool::{DisjointSlice, ThreadPool};

/// Activation rows quantized for one vec-dot type.
#[derive(Debug, Default)]
pub struct QuantizedActs {
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
}

/// The vec-dot type activations must be quantized to for weights of type `ty`.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    kernels::vec_dot_type(ty)
}

/// Quantizes `m` rows of `n_cols` floats (`x.len() == m * n_cols`) to `vdt`, in parallel.
pub fn quantize_rows(
    pool: &ThreadPool,
    vdt: GgmlType,
    x: &[f32],
    n_cols: usize,
    m: usize,
    dst: &mut QuantizedActs,
) {
    let row_bytes = vdt.row_bytes(n_cols as u64).expect("row size") as usize;
    dst.ty = Some(vdt);
    dst.n_cols = n_cols;
    dst.m = m;
    dst.row_bytes = row_bytes;
    if dst.data.len() < m * row_bytes {
        dst.data.resize(m * row_bytes, 0);
    }
    let out = DisjointSlice::new(&mut dst.data[..m * row_bytes]);
    let quant_row = |j: usize| {
        // SAFETY: each row index j is handled by exactly one participant.
        let d = unsafe { out.range_mut(j * row_bytes..(j + 1) * row_bytes) };
        kernels::quantize_activations(vdt, &x[j * n_cols..(j + 1) * n_cols], d);
    };
    if m == 1 {
        quant_row(0);
    } else {
        pool.for_each_chunk(m, 1, |_, r| r.for_each(quant_row));
    }
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
) {
    let m = acts.m;
    let n_rows = w.n_rows;
    debug_assert!(out.len() >= m * n_rows);
    let dst = DisjointSlice::new(&mut out[..m * n_rows]);
    let act_bytes = &acts.data[..m * acts.row_bytes];
    if m == 1 {
        let chunk = pool.chunk_size(n_rows, 32, 8);
        pool.for_each_chunk(n_rows, chunk, |_, rows| {
            // SAFETY: chunks of rows are disjoint.
            let o = unsafe { dst.range_mut(rows.clone()) };
            kernels::matmul(w.ty, w.n_cols, w_bytes, rows, act_bytes, 1, o, 0);
        });
        return;
    }
    let chunk = pool.chunk_size(n_rows, 16, 16).min(64);
    pool.for_each_chunk(n_rows, chunk, |_, rows| {
        TILE.with(|t| {
            let mut t = t.borrow_mut();
            let len = rows.len();
            if t.len() < len * m {
                t.resize(len * m, 0.0);
            }
            kernels::matmul(
                w.ty,
                w.n_cols,
                w_bytes,
                rows.clone(),
                act_bytes,
                m,
                &mut t[..len * m],
                len,
            );
            for j in 0..m {
                // SAFETY: (row j, this chunk's rows) ranges are disjoint across chunks.
                let o = unsafe { dst.range_mut(j * n_rows + rows.start..j * n_rows + rows.end) };
                o.copy_from_slice(&t[j * len..(j + 1) * len]);
            }
        });
    });
}
