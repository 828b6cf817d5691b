//! Row-level weight access for the sparse FFN: dot products with chosen rows and
//! coefficient-weighted row sums (axpy), over a row-major weight matrix of any ggml type.
//!
//! F32 and F16 are handled here; quantized types go through `crate::quant` kernels.

use half::f16;

use crate::quant::GgmlType;
use crate::{bail, Result};

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

    fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantize row `r` into `out` (len `n_cols`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.n_rows || out.len() != self.n_cols {
            bail!(InvalidArgument, "row {r} of {} / out len {}", self.n_rows, out.len());
        }
        let row = self.row(r);
        match self.ty {
            GgmlType::F32 => {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            ty => bail!(Unsupported, "sparse FFN rows of type {ty} need the quant kernels"),
        }
        Ok(())
    }
}

fn check_rows(m: &QMatrix, rows: &[u32]) -> Result<()> {
    if let Some(&bad) = rows.iter().find(|&&r| r as usize >= m.n_rows) {
        bail!(InvalidArgument, "row id {bad} out of range ({} rows)", m.n_rows);
    }
    Ok(())
}

fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    // Four partial sums: vectorizes, and the order is fixed so results are reproducible.
    let mut acc = [0f32; 4];
    let (wc, xc) = (w.chunks_exact(16), x.chunks_exact(4));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..4 {
            let b = &wb[4 * k..4 * k + 4];
            acc[k] += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * xb[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (b, &xv) in wt.chunks_exact(4).zip(xt) {
        s += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * xv;
    }
    s
}

fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(4));
    let (wt, xt) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..4 {
            acc[k] += f16::from_le_bytes([wb[2 * k], wb[2 * k + 1]]).to_f32() * xb[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (b, &xv) in wt.chunks_exact(2).zip(xt) {
        s += f16::from_le_bytes([b[0], b[1]]).to_f32() * xv;
    }
    s
}

/// `out[i] = row(rows[i]) · x` (or every row in order when `rows` is `None`).
pub fn matvec_rows(m: &QMatrix, rows: Option<&[u32]>, x: &[f32], out: &mut [f32]) -> Result<()> {
    if x.len() != m.n_cols {
        bail!(InvalidArgument, "input length {} for {} columns", x.len(), m.n_cols);
    }
    let n = rows.map_or(m.n_rows, <[u32]>::len);
    if out.len() != n {
        bail!(InvalidArgument, "output length {} for {n} rows", out.len());
    }
    if let Some(r) = rows {
        check_rows(m, r)?;
    }
    let dot: fn(&[u8], &[f32]) -> f32 = match m.ty {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        ty => bail!(Unsupported, "sparse FFN matvec on {ty} needs the quant kernels"),
    };
    match rows {
        None => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(m.row(i), x);
            }
        }
        Some(r) => {
            for (o, &ri) in out.iter_mut().zip(r) {
                *o = dot(m.row(ri as usize), x);
            }
        }
    }
    Ok(())
}

/// `out += Σ_i coefs[i] · row(rows[i])`, rows taken in the order given.
pub fn axpy_rows(m: &QMatrix, rows: &[u32], coefs: &[f32], out: &mut [f32]) -> Result<()> {
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
    check_rows(m, rows)?;
    match m.ty {
        GgmlType::F32 => {
            for (&r, &c) in rows.iter().zip(coefs) {
                for (o, b) in out.iter_mut().zip(m.row(r as usize).chunks_exact(4)) {
                    *o += c * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        GgmlType::F16 => {
            for (&r, &c) in rows.iter().zip(coefs) {
                for (o, b) in out.iter_mut().zip(m.row(r as usize).chunks_exact(2)) {
                    *o += c * f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
        ty => bail!(Unsupported, "sparse FFN axpy on {ty} needs the quant kernels"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn matvec_and_axpy_match_scalar_loops() {
        let (rows, cols) = (5, 7);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0).collect();
        let x: Vec<f32> = (0..cols).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = f32_bytes(&w);
        let m = QMatrix::new(GgmlType::F32, rows, cols, &bytes).unwrap();
        let sel = [4u32, 1, 3];
        let mut out = vec![0.0; 3];
        matvec_rows(&m, Some(&sel), &x, &mut out).unwrap();
        for (o, &r) in out.iter().zip(&sel) {
            let want: f64 = (0..cols)
                .map(|c| w[r as usize * cols + c] as f64 * x[c] as f64)
                .sum();
            assert!((*o as f64 - want).abs() < 1e-5);
        }
        let coefs = [0.5f32, -2.0, 1.5];
        let mut acc = vec![1.0f32; cols];
        axpy_rows(&m, &sel, &coefs, &mut acc).unwrap();
        for c in 0..cols {
            let want: f64 = 1.0
                + sel
                    .iter()
                    .zip(&coefs)
                    .map(|(&r, &k)| k as f64 * w[r as usize * cols + c] as f64)
                    .sum::<f64>();
            assert!((acc[c] as f64 - want).abs() < 1e-5);
        }
        // F16 gives the same on values exactly representable in f16.
        let h: Vec<u8> = w.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect();
        let mh = QMatrix::new(GgmlType::F16, rows, cols, &h).unwrap();
        let mut outh = vec![0.0; 3];
        matvec_rows(&mh, Some(&sel), &x, &mut outh).unwrap();
        assert_eq!(out, outh);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let bytes = f32_bytes(&[0.0; 6]);
        assert!(QMatrix::new(GgmlType::F32, 2, 4, &bytes).is_err());
        let m = QMatrix::new(GgmlType::F32, 2, 3, &bytes).unwrap();
        let mut out = vec![0.0; 1];
        assert!(matches!(
            matvec_rows(&m, Some(&[2]), &[0.0; 3], &mut out),
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            axpy_rows(&m, &[0], &[1.0, 2.0], &mut [0.0; 3]),
            Err(crate::Error::InvalidArgument(_))
        ));
    }
}
