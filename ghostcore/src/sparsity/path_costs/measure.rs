//! Measuring the time curves of [`super::PathCosts`] on this CPU, at a model's own shape.
//!
//! Each point is the median over reps of (sparse path time / dense kernel time), the two run
//! alternately rep by rep on random matrices of the layer's shape and type, cycled through
//! more memory than a last-level cache holds, so that both read from memory as decode does.
//! Measured here: the gathered rows of the gate/up type at `n_ff × n_embd`, the input-major
//! copy of Q5_0 gate/up rows over the kept input columns, and the exact neuron-major down
//! copies (Q4_K, Q6_K) at `n_embd × n_ff`. The requantized down copy keeps its built-in
//! curve (only layers without an exact copy use it).

use std::time::Instant;

use super::{PathCosts, TimeCurve};
use crate::model::Model;
use crate::quant::random::random_tensor;
use crate::quant::GgmlType;
use crate::sampling::Rng;
use crate::sparsity::exact_down::{ExactDown, ExactDownScratch};
use crate::sparsity::ffn::exact_down_split;
use crate::sparsity::input_major::{InputMajorQ5_0, InputMajorScratch};
use crate::sparsity::rows::Splitter;
use crate::sparsity::rows::{matvec_rows, quantize_input, QMatrix};
use crate::{bail, Result};

/// Kept shares of the rows the gathered-row curve is measured at.
pub const ROW_SHARES: [f64; 5] = [0.2, 0.4, 0.6, 0.8, 0.9];
/// Dropped shares of the input entries the input-major curve is measured at.
pub const INPUT_DROPS: [f64; 5] = [0.05, 0.1, 0.2, 0.3, 0.5];
/// Active shares of the neurons the exact-down curves are measured at.
pub const DOWN_SHARES: [f64; 5] = [0.1, 0.2, 0.4, 0.6, 0.8];

/// How long and over how much memory to measure.
#[derive(Clone, Copy, Debug)]
pub struct MeasureOptions {
    /// Alternated (dense, sparse) pairs per point; the median ratio is kept.
    pub reps: usize,
    /// Bytes of weights each curve cycles through (beyond the last-level cache).
    pub cycle_bytes: usize,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            reps: 31,
            cycle_bytes: 160 << 20,
        }
    }
}

/// Weight bytes one curve reads at most (about a second from memory): large matrices get
/// fewer reps, down to 5.
const CURVE_BYTES: f64 = 12e9;

impl MeasureOptions {
    /// Reps for matrices of `bytes`, each rep reading 16 matrices per point.
    fn reps_for(&self, bytes: usize, points: usize) -> usize {
        let cap = CURVE_BYTES / (16 * points * bytes.max(1)) as f64;
        self.reps.min((cap as usize).max(5)).max(1)
    }
}

/// The FFN shape and types whose paths a model's decode chooses between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FfnShape {
    pub n_embd: usize,
    pub n_ff: usize,
    /// Type of `ffn_gate` (the gathered rows' type) in the first layer.
    pub rows_type: GgmlType,
    /// The distinct `ffn_down` types with an exact copy, in layer order.
    pub exact_down_types: Vec<GgmlType>,
}

impl FfnShape {
    /// The shape of `model`'s FFN (its first layer's gate type; every layer's down type).
    pub fn of_model(model: &Model) -> Self {
        let c = model.config();
        let mut exact_down_types = Vec::new();
        for il in 0..c.n_layer {
            let d = &model.layer(il).ffn_down;
            if ExactDown::supports(d.ty, c.n_embd, d.n_cols) && !exact_down_types.contains(&d.ty) {
                exact_down_types.push(d.ty);
            }
        }
        let l0 = model.layer(0);
        FfnShape {
            n_embd: c.n_embd,
            n_ff: l0.ffn_gate.n_rows,
            rows_type: l0.ffn_gate.ty,
            exact_down_types,
        }
    }

    /// Whether the gate/up rows have an input-major copy (whose curve is then measured).
    pub fn has_input_major(&self) -> bool {
        InputMajorQ5_0::supports(self.rows_type, self.n_ff, self.n_embd)
    }
}

/// The curves of `shape` measured on this CPU: the gathered rows and each exact down copy
/// of the shape; the other paths keep [`PathCosts::builtin`]'s curves. `progress(what)` is
/// called before each curve.
pub fn measure(
    shape: &FfnShape,
    opts: &MeasureOptions,
    exec: &dyn Splitter,
    progress: &mut dyn FnMut(&str),
) -> Result<PathCosts> {
    let mut costs = PathCosts::builtin(shape.n_embd, exec.n_workers());
    progress("gathered rows");
    costs.gathered_rows = curve(gathered_rows(
        shape.rows_type,
        shape.n_ff,
        shape.n_embd,
        opts,
        exec,
    )?)?;
    if shape.has_input_major() {
        progress("input-major rows");
        costs.input_major = curve(input_major(shape.n_ff, shape.n_embd, opts, exec)?)?;
    }
    for &ty in &shape.exact_down_types {
        progress(&format!("exact {ty} down"));
        let c = curve(exact_down(ty, shape.n_embd, shape.n_ff, opts, exec)?)?;
        match costs.exact_down_curve_mut(ty) {
            Some(slot) => *slot = c,
            None => bail!(Unsupported, "no exact down copy of {ty}"),
        }
    }
    Ok(costs)
}

fn curve(points: Vec<(f64, f64)>) -> Result<TimeCurve> {
    TimeCurve::from_measured(&points).ok_or_else(|| {
        crate::Error::InvalidArgument(format!("measured path costs are not a curve: {points:?}"))
    })
}

/// `(share of the rows' bytes read, time relative to all rows in order)` of `matvec_rows`
/// over a random sorted share of the rows of `ty` matrices of `n_rows × n_cols`.
pub fn gathered_rows(
    ty: GgmlType,
    n_rows: usize,
    n_cols: usize,
    opts: &MeasureOptions,
    exec: &dyn Splitter,
) -> Result<Vec<(f64, f64)>> {
    let mut rng = Rng::new(3);
    let mats = cycled(random_blocks(ty, n_rows * n_cols, &mut rng)?, opts);
    let x: Vec<f32> = (0..n_cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let ids: Vec<Vec<u32>> = ROW_SHARES
        .iter()
        .map(|&s| random_ids(n_rows, s, 11))
        .collect();
    let (mut xq, mut out) = (Vec::new(), vec![0f32; n_rows]);
    let mut next = 0usize;
    let mut time = |rows: Option<&[u32]>| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..8 {
            let m = QMatrix::new(ty, n_rows, n_cols, &mats[next % mats.len()])?;
            next += 1;
            quantize_input(&m, &x, &mut xq)?;
            let n = rows.map_or(n_rows, <[u32]>::len);
            matvec_rows(&m, rows, &xq, &mut out[..n], exec)?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let mut ratios = vec![Vec::new(); ids.len()];
    for _ in 0..opts.reps_for(mats[0].len(), ids.len()) {
        for (k, ids) in ids.iter().enumerate() {
            let dense = time(None)?;
            ratios[k].push(time(Some(ids))? / dense);
        }
    }
    Ok(ids
        .iter()
        .zip(&mut ratios)
        .map(|(ids, r)| (ids.len() as f64 / n_rows as f64, median(r)))
        .collect())
}

/// `(share of the rows' bytes read, time relative to all rows in order)` of the input-major
/// copy of Q5_0 matrices of `n_rows × n_cols` over the input columns kept when a share of
/// the smallest-magnitude entries of a roughly normal input is dropped ([`INPUT_DROPS`]).
pub fn input_major(
    n_rows: usize,
    n_cols: usize,
    opts: &MeasureOptions,
    exec: &dyn Splitter,
) -> Result<Vec<(f64, f64)>> {
    let ty = GgmlType::Q5_0;
    let mut rng = Rng::new(7);
    let one = random_blocks(ty, n_rows * n_cols, &mut rng)?;
    let copy = InputMajorQ5_0::from_q5_0(ty, n_rows, n_cols, &one)?;
    let mats = cycled(one, opts);
    let copies: Vec<InputMajorQ5_0> = (0..mats.len()).map(|_| copy.clone()).collect();
    // About normal (a sum of four uniforms), as normed FFN inputs are.
    let x: Vec<f32> = (0..n_cols)
        .map(|_| (0..4).map(|_| rng.next_f64() as f32 - 0.5).sum())
        .collect();
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    mags.sort_by(f32::total_cmp);
    let inputs: Vec<Vec<f32>> = INPUT_DROPS
        .iter()
        .map(|&d| {
            let t = mags[((d * n_cols as f64) as usize).min(n_cols - 1)];
            x.iter()
                .map(|&v| if v.abs() < t { 0.0 } else { v })
                .collect()
        })
        .collect();
    let m0 = QMatrix::new(ty, n_rows, n_cols, &mats[0])?;
    let mut xqs = Vec::new();
    for xi in &inputs {
        let mut xq = Vec::new();
        quantize_input(&m0, xi, &mut xq)?;
        xqs.push(xq);
    }
    let (mut out, mut scratch) = (vec![0f32; n_rows], InputMajorScratch::default());
    let mut next = 0usize;
    let mut ratios = vec![Vec::new(); xqs.len()];
    for _ in 0..opts.reps_for(mats[0].len(), xqs.len()) {
        for (k, xq) in xqs.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..8 {
                let m = QMatrix::new(ty, n_rows, n_cols, &mats[next % mats.len()])?;
                next += 1;
                matvec_rows(&m, None, xq, &mut out, exec)?;
            }
            let dense = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..8 {
                copies[next % copies.len()].matvec(xq, &mut out, &mut scratch, exec)?;
                next += 1;
            }
            ratios[k].push(t.elapsed().as_secs_f64() / dense);
        }
    }
    let all = m0.total_bytes() as f64;
    xqs.iter()
        .zip(&mut ratios)
        .map(|(xq, r)| Ok((copy.bytes_for(xq)? as f64 / all, median(r))))
        .collect()
}

/// `(share of the dense down's bytes read, time relative to the dense down)` of the exact
/// neuron-major copy of a `ty` down (`n_embd` rows of `n_ff`) over a random share of active
/// neurons.
pub fn exact_down(
    ty: GgmlType,
    n_embd: usize,
    n_ff: usize,
    opts: &MeasureOptions,
    exec: &dyn Splitter,
) -> Result<Vec<(f64, f64)>> {
    let mut rng = Rng::new(5);
    let one = random_tensor(ty, n_embd * n_ff, &mut rng)?;
    let bytes = one.len();
    let copy = ExactDown::from_down(ty, n_embd, n_ff, &one)?;
    let mats = cycled(one, opts);
    // Copies of the same matrix at distinct addresses (building each would cost seconds).
    let copies: Vec<ExactDown> = (0..mats.len()).map(|_| copy.clone()).collect();
    let h: Vec<f32> = (0..n_ff).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let ids: Vec<Vec<u32>> = DOWN_SHARES
        .iter()
        .map(|&s| random_ids(n_ff, s, 13))
        .collect();
    let (mut xq, mut out) = (Vec::new(), vec![0f32; n_embd]);
    let (mut partials, mut accs) = (Vec::new(), Vec::<ExactDownScratch>::new());
    let mut next = 0usize;
    let mut ratios = vec![Vec::new(); ids.len()];
    for _ in 0..opts.reps_for(bytes / 2, ids.len()) {
        for (k, ids) in ids.iter().enumerate() {
            let coefs: Vec<f32> = ids.iter().map(|&j| h[j as usize]).collect();
            let t = Instant::now();
            for _ in 0..4 {
                let m = QMatrix::new(ty, n_embd, n_ff, &mats[next % mats.len()])?;
                next += 1;
                quantize_input(&m, &h, &mut xq)?;
                matvec_rows(&m, None, &xq, &mut out, exec)?;
            }
            let dense = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..4 {
                let copy = &copies[next % copies.len()];
                exact_down_split(copy, ids, &coefs, &mut out, exec, &mut partials, &mut accs)?;
                next += 1;
            }
            ratios[k].push(t.elapsed().as_secs_f64() / dense);
        }
    }
    Ok(ids
        .iter()
        .zip(&mut ratios)
        .map(|(ids, r)| (copy.bytes_for(ids) as f64 / bytes as f64, median(r)))
        .collect())
}

/// Random weights of `ty`: [`random_tensor`]'s where it generates the type, else random
/// quant bytes with every block's leading f16 scale set to 2^-7 (the legacy 32-weight types,
/// whose block starts with its scale). Only the time of reading them matters here.
fn random_blocks(ty: GgmlType, n: usize, rng: &mut Rng) -> Result<Vec<u8>> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            if n % ty.block_size() != 0 {
                bail!(InvalidArgument, "{n} elements are not whole {ty} blocks");
            }
            let mut v: Vec<u8> = (0..n / ty.block_size() * ty.type_size())
                .map(|_| (rng.next_u64() >> 56) as u8)
                .collect();
            let scale = half::f16::from_f32(1.0 / 128.0).to_bits().to_le_bytes();
            for b in v.chunks_exact_mut(ty.type_size()) {
                b[..2].copy_from_slice(&scale);
            }
            Ok(v)
        }
        _ => random_tensor(ty, n, rng),
    }
}

/// Copies of `one` at distinct addresses, enough to cycle through `opts.cycle_bytes` (at
/// least two).
fn cycled(one: Vec<u8>, opts: &MeasureOptions) -> Vec<Vec<u8>> {
    let n = (opts.cycle_bytes / one.len().max(1)).max(2);
    let mut v = vec![one.clone(); n - 1];
    v.push(one);
    v
}

/// Sorted ids of a random `share` of `0..n` (fixed seed).
fn random_ids(n: usize, share: f64, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n as u32).filter(|_| rng.next_f64() < share).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparsity::Serial;

    #[test]
    fn measures_every_curve_of_a_small_shape() {
        // Tiny matrices in cache: the values mean nothing, the plumbing is what is checked.
        let opts = MeasureOptions {
            reps: 1,
            cycle_bytes: 1 << 20,
        };
        let shape = FfnShape {
            n_embd: 256,
            n_ff: 512,
            rows_type: GgmlType::Q5_0,
            exact_down_types: vec![GgmlType::Q4_K, GgmlType::Q6_K],
        };
        let mut seen = Vec::new();
        let costs = measure(&shape, &opts, &Serial, &mut |w| seen.push(w.to_string())).unwrap();
        assert_eq!(
            seen,
            [
                "gathered rows",
                "input-major rows",
                "exact q4_K down",
                "exact q6_K down"
            ]
        );
        let builtin = PathCosts::builtin(256, 1);
        assert_ne!(costs.gathered_rows, builtin.gathered_rows);
        assert_eq!(costs.gathered_rows.points().len(), ROW_SHARES.len() + 1);
        assert_eq!(costs.exact_q4_k_down.points().len(), DOWN_SHARES.len() + 1);
        assert_eq!(costs.exact_q6_k_down.points().len(), DOWN_SHARES.len() + 1);
        assert_eq!(costs.input_major.points().len(), INPUT_DROPS.len() + 1);
        assert_ne!(costs.input_major, builtin.input_major);
        for c in [
            costs.gathered_rows,
            costs.input_major,
            costs.exact_q4_k_down,
            costs.exact_q6_k_down,
        ] {
            for w in c.points().windows(2) {
                assert!(w[1].0 > w[0].0 && w[1].1 >= w[0].1, "{c:?}");
            }
        }
        // Shares are those of the bytes actually read.
        let rows = gathered_rows(GgmlType::Q5_0, 512, 256, &opts, &Serial).unwrap();
        for (p, s) in rows.iter().zip(ROW_SHARES) {
            assert!((p.0 - s).abs() < 0.1, "{rows:?}");
        }
        // Input-major: fewer bytes the more entries are dropped, about the kept share.
        let im = input_major(512, 256, &opts, &Serial).unwrap();
        for w in im.windows(2) {
            assert!(w[1].0 < w[0].0, "{im:?}");
        }
        for (p, d) in im.iter().zip(INPUT_DROPS) {
            assert!((p.0 - (1.0 - d)).abs() < 0.15, "{im:?}");
        }
    }

    #[test]
    fn an_unsupported_down_type_is_an_error() {
        let opts = MeasureOptions {
            reps: 1,
            cycle_bytes: 1 << 20,
        };
        assert!(exact_down(GgmlType::Q5_0, 256, 512, &opts, &Serial).is_err());
    }
}
