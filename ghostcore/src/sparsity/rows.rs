//! Row-level weight access for the sparse FFN over the `crate::quant` kernels: dot products of
//! an activation with chosen rows (`matvec_gather`), and coefficient-weighted row sums
//! (`axpy_rows`), split over the caller's workers.

use std::ops::Range;
use std::sync::Mutex;

use crate::quant::{self, GgmlType};
use crate::{bail, Error, Result};

/// Runs independent tasks, possibly in parallel. `run(n, f)` calls `f(i)` once for every
/// `i < n`, in any order and on any worker, and returns when all are done.
pub trait Splitter: Sync {
    fn n_workers(&self) -> usize;
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// Runs every task on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Splitter for Serial {
    fn n_workers(&self) -> usize {
        1
    }
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n_tasks).for_each(f);
    }
}

/// A borrowed row-major weight matrix: `n_rows` rows of `n_cols` weights of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub n_rows: usize,
    pub n_cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Check that `data` holds exactly `n_rows` rows of `n_cols` weights of `ty`.
    pub fn new(ty: GgmlType, n_rows: usize, n_cols: usize, data: &'a [u8]) -> Result<Self> {
        if !ty.is_supported_for_compute() {
            bail!(Unsupported, "sparse FFN over {ty} weights");
        }
        let Some(rb) = ty.row_bytes(n_cols as u64) else {
            bail!(
                Format,
                "rows of {n_cols} weights are not a whole number of {ty} blocks"
            );
        };
        if (rb as usize).checked_mul(n_rows) != Some(data.len()) {
            bail!(
                Format,
                "{} bytes for {n_rows}×{n_cols} {ty} (needs {})",
                data.len(),
                rb as usize * n_rows
            );
        }
        Ok(QMatrix {
            ty,
            n_rows,
            n_cols,
            data,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.n_rows.max(1)
    }

    pub fn total_bytes(&self) -> usize {
        self.data.len()
    }

    /// The activation type this matrix's dot products take.
    pub fn vec_dot_type(&self) -> GgmlType {
        quant::vec_dot_type(self.ty)
    }

    /// Dequantize row `r` into `out` (len `n_cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.n_rows || out.len() != self.n_cols {
            bail!(
                InvalidArgument,
                "row {r} of {} / out len {}",
                self.n_rows,
                out.len()
            );
        }
        let rb = self.row_bytes();
        quant::dequantize_row(self.ty, &self.data[r * rb..(r + 1) * rb], out)
    }
}

/// Quantize `x` as the activation type of `m` into `buf` (resized).
pub fn quantize_input(m: &QMatrix, x: &[f32], buf: &mut Vec<u8>) -> Result<()> {
    if x.len() != m.n_cols {
        bail!(
            InvalidArgument,
            "input length {} for {} columns",
            x.len(),
            m.n_cols
        );
    }
    let vdt = m.vec_dot_type();
    let n = vdt.row_bytes(x.len() as u64).ok_or_else(|| {
        Error::InvalidArgument(format!("{} values are not whole {vdt} blocks", x.len()))
    })?;
    buf.resize(n as usize, 0);
    quant::quantize_activations(vdt, x, buf)
}

fn split(n: usize, parts: usize) -> impl Iterator<Item = Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let base = n / parts;
    let extra = n % parts;
    (0..parts).map(move |p| {
        let start = p * base + p.min(extra);
        start..start + base + usize::from(p < extra)
    })
}

fn first_error(slot: &Mutex<Option<Error>>, r: Result<()>) {
    if let Err(e) = r {
        let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(e);
    }
}

fn take_error(slot: Mutex<Option<Error>>) -> Result<()> {
    match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Tasks per worker: a few, so a slow worker does not hold up the rest.
const TASKS_PER_WORKER: usize = 4;
/// Fewest rows per task worth the dispatch.
const MIN_ROWS_PER_TASK: usize = 16;

/// `out[i] = row(rows[i]) · x` (or every row in order when `rows` is `None`); `xq` is the
/// input quantized by [`quantize_input`].
pub fn matvec_rows(
    m: &QMatrix,
    rows: Option<&[u32]>,
    xq: &[u8],
    out: &mut [f32],
    exec: &dyn Splitter,
) -> Result<()> {
    let n = rows.map_or(m.n_rows, <[u32]>::len);
    if out.len() != n {
        bail!(InvalidArgument, "output length {} for {n} rows", out.len());
    }
    // One worker: one task on this thread (no split, no per-task setup).
    if exec.n_workers() <= 1 {
        return match rows {
            None => quant::matvec(m.ty, m.n_cols, m.data, 0..n, xq, out),
            Some(ids) => quant::matvec_gather(m.ty, m.n_cols, m.data, ids, xq, out),
        };
    }
    let n_tasks = (exec.n_workers() * TASKS_PER_WORKER)
        .min(n.div_ceil(MIN_ROWS_PER_TASK))
        .max(1);
    let ranges: Vec<Range<usize>> = split(n, n_tasks).collect();
    let mut rest = &mut *out;
    let mut outs = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let (a, b) = rest.split_at_mut(r.len());
        outs.push(Mutex::new(a));
        rest = b;
    }
    let err = Mutex::new(None);
    let task = |t: usize| {
        let r = ranges[t].clone();
        let mut o = outs[t].lock().unwrap_or_else(|p| p.into_inner());
        let res = match rows {
            None => quant::matvec(m.ty, m.n_cols, m.data, r, xq, &mut o),
            Some(ids) => quant::matvec_gather(m.ty, m.n_cols, m.data, &ids[r], xq, &mut o),
        };
        first_error(&err, res);
    };
    if ranges.len() == 1 {
        task(0);
    } else {
        exec.run(ranges.len(), &task);
    }
    drop(outs);
    take_error(err)
}

/// `out = Σ_i coefs[i] · row(rows[i])`; each worker sums a slice of the list into its own
/// buffer (`partials`, reused), then the buffers are added in order.
pub fn axpy_rows(
    m: &QMatrix,
    rows: &[u32],
    coefs: &[f32],
    out: &mut [f32],
    exec: &dyn Splitter,
    partials: &mut Vec<Vec<f32>>,
) -> Result<()> {
    if out.len() != m.n_cols || coefs.len() != rows.len() {
        bail!(
            InvalidArgument,
            "axpy: out {} for {} columns, {} coefs for {} rows",
            out.len(),
            m.n_cols,
            coefs.len(),
            rows.len()
        );
    }
    out.fill(0.0);
    let n_tasks = exec
        .n_workers()
        .min(rows.len().div_ceil(MIN_ROWS_PER_TASK))
        .max(1);
    if n_tasks == 1 {
        return quant::axpy_rows(m.ty, m.n_cols, m.data, rows, coefs, out);
    }
    partials.resize_with(n_tasks, Vec::new);
    let ranges: Vec<Range<usize>> = split(rows.len(), n_tasks).collect();
    let bufs: Vec<Mutex<&mut Vec<f32>>> = partials.iter_mut().map(Mutex::new).collect();
    let err = Mutex::new(None);
    exec.run(n_tasks, &|t: usize| {
        let r = ranges[t].clone();
        let mut b = bufs[t].lock().unwrap_or_else(|p| p.into_inner());
        b.clear();
        b.resize(m.n_cols, 0.0);
        let res = quant::axpy_rows(m.ty, m.n_cols, m.data, &rows[r.clone()], &coefs[r], &mut b);
        first_error(&err, res);
    });
    drop(bufs);
    take_error(err)?;
    for p in partials.iter().take(n_tasks) {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A splitter that runs tasks in reverse on one thread, as a stand-in for any order.
    struct Reverse(usize);
    impl Splitter for Reverse {
        fn n_workers(&self) -> usize {
            self.0
        }
        fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            (0..n).rev().for_each(f);
        }
    }

    #[test]
    fn matvec_and_axpy_match_scalar_loops() {
        let (rows, cols) = (50, 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = f32_bytes(&w);
        let m = QMatrix::new(GgmlType::F32, rows, cols, &bytes).unwrap();
        let mut xq = Vec::new();
        quantize_input(&m, &x, &mut xq).unwrap();
        let sel: Vec<u32> = (0..rows as u32).rev().step_by(2).collect();
        let coefs: Vec<f32> = sel.iter().map(|&r| r as f32 * 0.1 - 2.0).collect();
        for exec in [&Serial as &dyn Splitter, &Reverse(3)] {
            let mut out = vec![0.0; sel.len()];
            matvec_rows(&m, Some(&sel), &xq, &mut out, exec).unwrap();
            for (o, &r) in out.iter().zip(&sel) {
                let want: f64 = (0..cols)
                    .map(|c| w[r as usize * cols + c] as f64 * x[c] as f64)
                    .sum();
                assert!((*o as f64 - want).abs() < 1e-4);
            }
            let mut all = vec![0.0; rows];
            matvec_rows(&m, None, &xq, &mut all, exec).unwrap();
            for (k, &r) in sel.iter().enumerate() {
                assert_eq!(all[r as usize], out[k]);
            }
            let mut acc = vec![9.0f32; cols];
            let mut partials = Vec::new();
            axpy_rows(&m, &sel, &coefs, &mut acc, exec, &mut partials).unwrap();
            for c in 0..cols {
                let want: f64 = sel
                    .iter()
                    .zip(&coefs)
                    .map(|(&r, &k)| k as f64 * w[r as usize * cols + c] as f64)
                    .sum();
                assert!((acc[c] as f64 - want).abs() < 1e-3, "{} vs {want}", acc[c]);
            }
        }
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let bytes = f32_bytes(&[0.0; 64]);
        assert!(QMatrix::new(GgmlType::F32, 2, 33, &bytes).is_err());
        let m = QMatrix::new(GgmlType::F32, 2, 32, &bytes).unwrap();
        let mut xq = Vec::new();
        quantize_input(&m, &[0.0; 32], &mut xq).unwrap();
        let mut out = vec![0.0; 1];
        assert!(matches!(
            matvec_rows(&m, Some(&[2]), &xq, &mut out, &Serial),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            axpy_rows(
                &m,
                &[0],
                &[1.0, 2.0],
                &mut [0.0; 32],
                &Serial,
                &mut Vec::new()
            ),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            quantize_input(&m, &[0.0; 3], &mut xq),
            Err(Error::InvalidArgument(_))
        ));
    }
}
