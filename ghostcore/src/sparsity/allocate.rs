//! Per-layer allocation of the FFN byte budget.
//!
//! Layers tolerate sparsity very differently (on SmolLM2 the same cascade share leaves
//! layer 0 at 18% of its neurons skipped and others at 50–57%), so one share for all layers
//! wastes quality where a layer is sensitive and bytes where it is not. Calibration measures,
//! for each layer alone (every other layer dense), the KL divergence to the dense run at each
//! level of a ladder of cascade shares, together with the bytes that level saves in that
//! layer (known exactly from the tally). Assuming the layers' KLs add up, the allocation
//! picks per layer the level minimizing `KL_l − λ·saved_l` (a Lagrangian relaxation of
//! "least total KL for at least this many bytes saved") and bisects λ to reach a byte target.
//! The combined setting is then measured for real; additivity is an assumption, not trusted.
//!
//! Measured on SmolLM2 (`bench/results/2026-11-23-s2-sparsity.md`, third pass): single-layer
//! KLs are ~4× sub-additive and concave in the level, so an unconstrained allocation (dense
//! layers allowed) is much worse than uniform shares; marginal costs around a uniform setting
//! are below the noise of a calibration-sized slice; with a floor at the uniform level the
//! allocations land on the uniform frontier, not above it. Hence opt-in (`ghost calibrate
//! --allocate`), not part of the default calibration.

use std::sync::Arc;

use super::engine::install_with;
use super::eval::{perplexity, DenseReference, PplConfig};
use super::exact_down::ExactDown;
use super::ffn::{LayerPlan, PathPolicy};
use super::mode::Score;
use super::plan::resolve_layered_cascade;
use super::sidecar::{DownCopy, Sidecar};
use crate::context::Context;
use crate::{bail, Result};

/// The cascade levels `(skip_all, skip_down)` measured per layer, ascending in both shares
/// (level 0, dense, is implied).
pub const DEFAULT_LADDER: [(f32, f32); 4] = [(0.1, 0.3), (0.2, 0.45), (0.3, 0.55), (0.4, 0.65)];

/// One layer's measured cost and gain per level; index 0 is the dense level (0 bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCurve {
    /// Mean KL(dense ‖ run) per scored token with this layer at the level and every other
    /// layer at the base level.
    pub kl: Vec<f64>,
    /// FFN weight bytes per token not read in this layer.
    pub saved: Vec<f64>,
}

/// What [`measure_sensitivity`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensitivity {
    /// The levels measured (without the dense level 0).
    pub ladder: Vec<(f32, f32)>,
    pub curves: Vec<LayerCurve>,
    /// FFN weight bytes per token of the dense model (all layers).
    pub dense_bytes: f64,
    /// The level every other layer held while one layer was varied (0: dense).
    pub base: usize,
}

impl Sensitivity {
    /// The `(skip_all, skip_down)` share of each layer for level indices `pick` (0 = dense).
    pub fn levels(&self, pick: &[usize]) -> Vec<(f32, f32)> {
        pick.iter()
            .map(|&k| {
                if k == 0 {
                    (0.0, 0.0)
                } else {
                    self.ladder[k - 1]
                }
            })
            .collect()
    }

    /// The predicted (KL, share of FFN bytes saved) of `pick`, assuming the layers' changes
    /// from the base level add up: KL(base everywhere) + Σ_l (KL_l(pick_l) − KL_l(base)).
    pub fn predict(&self, pick: &[usize]) -> (f64, f64) {
        let base_kl = self.curves.first().map_or(0.0, |c| c.kl[self.base]);
        let (kl, saved) = self
            .curves
            .iter()
            .zip(pick)
            .fold((base_kl, 0.0), |(k, s), (c, &i)| {
                (k + c.kl[i] - c.kl[self.base], s + c.saved[i])
            });
        (kl, saved / self.dense_bytes.max(f64::MIN_POSITIVE))
    }
}

/// Per layer, the level `≥ floor` minimizing `kl − λ·saved` (ties: the lower level).
pub fn pick_levels(curves: &[LayerCurve], lambda: f64, floor: usize) -> Vec<usize> {
    curves
        .iter()
        .map(|c| {
            let n = c.kl.len().min(c.saved.len());
            let mut best = floor.min(n.saturating_sub(1));
            for i in best + 1..n {
                if c.kl[i] - lambda * c.saved[i] < c.kl[best] - lambda * c.saved[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// The Lagrangian allocation saving at least `target` bytes per token in total with the
/// least predicted KL among the Lagrangian solutions (the smallest λ reaching it), every
/// layer at level `floor` or above, or `None` when even the highest levels everywhere do not
/// save `target`.
pub fn allocate(curves: &[LayerCurve], target: f64, floor: usize) -> Option<Vec<usize>> {
    let saved = |p: &[usize]| -> f64 { curves.iter().zip(p).map(|(c, &i)| c.saved[i]).sum() };
    let mut hi = 1e-12;
    loop {
        let p = pick_levels(curves, hi, floor);
        if saved(&p) >= target {
            break;
        }
        if hi > 1e30 {
            return None;
        }
        hi *= 4.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if saved(&pick_levels(curves, mid, floor)) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(pick_levels(curves, hi, floor))
}

/// Measure every layer at every ladder level on `tokens` (KL against the dense run, `cfg`
/// chunking) while every other layer holds level `base` (0: dense, i.e. each layer alone;
/// `k ≥ 1`: `ladder[k-1]`, i.e. the marginal cost around that uniform setting, interactions
/// included). Costs `2 + n_layer · ladder.len()` perplexity runs over `tokens`.
#[allow(clippy::too_many_arguments)]
pub fn measure_sensitivity(
    ctx: &mut Context,
    sidecar: &Sidecar,
    copies: Arc<Vec<DownCopy>>,
    exact: Arc<Vec<Option<ExactDown>>>,
    tokens: &[u32],
    bos: Option<u32>,
    cfg: &PplConfig,
    first: Score,
    ladder: &[(f32, f32)],
    base: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Sensitivity> {
    let n_layer = sidecar.n_layer;
    if ladder.is_empty() {
        bail!(InvalidArgument, "empty allocation ladder");
    }
    if base > ladder.len() {
        bail!(
            InvalidArgument,
            "allocation base level {base} is beyond the ladder's {} levels",
            ladder.len()
        );
    }
    let mut reference = DenseReference::default();
    let dense = install_with(
        ctx,
        vec![LayerPlan::DENSE; n_layer],
        Some(copies.clone()),
        Some(exact.clone()),
    )?;
    perplexity(
        ctx,
        tokens,
        bos,
        cfg,
        None,
        Some(&mut reference),
        &mut |_, _| {},
    )?;
    let dense_bytes: f64 = dense
        .tally()
        .layers
        .iter()
        .map(|t| t.bytes_dense as f64 / t.steps.max(1) as f64)
        .sum();
    let level = |k: usize| if k == 0 { (0.0, 0.0) } else { ladder[k - 1] };
    // (KL, bytes saved per token per layer) of one setting.
    let run = |ctx: &mut Context, levels: &[(f32, f32)]| -> Result<(f64, Vec<f64>)> {
        // Bytes saved by the fewest-bytes paths: the CPU-independent figure.
        let plans = resolve_layered_cascade(sidecar, false, first, levels)?
            .into_iter()
            .map(|p| p.with_paths(PathPolicy::FewestBytes))
            .collect();
        let h = install_with(ctx, plans, Some(copies.clone()), Some(exact.clone()))?;
        let r = perplexity(
            ctx,
            tokens,
            bos,
            cfg,
            Some(&reference),
            None,
            &mut |_, _| {},
        )?;
        let saved = h
            .tally()
            .layers
            .iter()
            .map(|t| t.bytes_dense.saturating_sub(t.bytes_read) as f64 / t.steps.max(1) as f64)
            .collect();
        Ok((r.mean_kl, saved))
    };
    let base_levels = vec![level(base); n_layer];
    let (base_kl, base_saved) = if base == 0 {
        (0.0, vec![0.0; n_layer])
    } else {
        run(ctx, &base_levels)?
    };
    let total = n_layer * ladder.len();
    let mut done = 0;
    let mut curves = Vec::with_capacity(n_layer);
    for il in 0..n_layer {
        let mut curve = LayerCurve {
            kl: Vec::with_capacity(ladder.len() + 1),
            saved: Vec::with_capacity(ladder.len() + 1),
        };
        for k in 0..=ladder.len() {
            let (kl, saved) = if k == base {
                (base_kl, base_saved[il])
            } else {
                let mut levels = base_levels.clone();
                levels[il] = level(k);
                let (kl, saved) = run(ctx, &levels)?;
                done += 1;
                progress(done, total);
                (kl, saved[il])
            };
            curve.kl.push(kl);
            curve.saved.push(saved);
        }
        curves.push(curve);
    }
    super::engine::uninstall(ctx)?;
    Ok(Sensitivity {
        ladder: ladder.to_vec(),
        curves,
        dense_bytes,
        base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(kl: &[f64], saved: &[f64]) -> LayerCurve {
        LayerCurve {
            kl: kl.to_vec(),
            saved: saved.to_vec(),
        }
    }

    /// Exhaustive search: the least Σ KL among all combinations saving at least `target`.
    fn brute_force(curves: &[LayerCurve], target: f64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let n = curves.len();
        let mut idx = vec![0usize; n];
        loop {
            let (kl, saved) = curves
                .iter()
                .zip(&idx)
                .fold((0.0, 0.0), |(k, s), (c, &i)| (k + c.kl[i], s + c.saved[i]));
            if saved >= target && best.is_none_or(|b| kl < b) {
                best = Some(kl);
            }
            let mut l = 0;
            while l < n {
                idx[l] += 1;
                if idx[l] < curves[l].kl.len() {
                    break;
                }
                idx[l] = 0;
                l += 1;
            }
            if l == n {
                return best;
            }
        }
    }

    fn test_curves() -> Vec<LayerCurve> {
        vec![
            curve(&[0.0, 0.01, 0.05, 0.2], &[0.0, 10.0, 20.0, 30.0]),
            curve(&[0.0, 0.001, 0.002, 0.004], &[0.0, 10.0, 20.0, 30.0]),
            curve(&[0.0, 0.003, 0.01, 0.03], &[0.0, 12.0, 22.0, 35.0]),
            curve(&[0.0, 0.02, 0.03, 0.05], &[0.0, 5.0, 25.0, 40.0]),
        ]
    }

    #[test]
    fn lagrangian_picks_are_optimal_for_the_bytes_they_save() {
        let curves = test_curves();
        for lambda in [0.0, 1e-4, 3e-4, 1e-3, 2e-3, 1e-2, 1.0] {
            let p = pick_levels(&curves, lambda, 0);
            let (kl, saved) = curves
                .iter()
                .zip(&p)
                .fold((0.0, 0.0), |(k, s), (c, &i)| (k + c.kl[i], s + c.saved[i]));
            let best = brute_force(&curves, saved).unwrap();
            assert!(kl <= best + 1e-12, "λ {lambda}: {kl} vs optimum {best}");
        }
    }

    #[test]
    fn allocation_reaches_the_target_and_cheap_layers_go_first() {
        let curves = test_curves();
        let total_max: f64 = curves.iter().map(|c| c.saved[3]).sum();
        for target in [0.0, 15.0, 40.0, 70.0, 100.0, total_max] {
            let p = allocate(&curves, target, 0).unwrap();
            let saved: f64 = curves.iter().zip(&p).map(|(c, &i)| c.saved[i]).sum();
            assert!(saved >= target, "target {target}: saved {saved}");
        }
        assert_eq!(allocate(&curves, total_max + 1.0, 0), None);
        // The nearly free layer 1 is used fully before the sensitive layer 0 is touched.
        let p = allocate(&curves, 30.0, 0).unwrap();
        assert_eq!((p[0], p[1]), (0, 3));
        assert_eq!(allocate(&curves, 0.0, 0).unwrap(), vec![0; 4]);
        // A floor keeps every layer at or above it, and the target is still met.
        let p = allocate(&curves, 70.0, 1).unwrap();
        assert!(p.iter().all(|&k| k >= 1), "{p:?}");
        assert_eq!(allocate(&curves, 0.0, 2).unwrap(), vec![2; 4]);
    }

    #[test]
    fn prediction_adds_layers() {
        let s = Sensitivity {
            ladder: vec![(0.1, 0.3), (0.2, 0.4), (0.3, 0.5)],
            curves: test_curves(),
            dense_bytes: 200.0,
            base: 0,
        };
        let (kl, share) = s.predict(&[1, 2, 0, 3]);
        assert!((kl - (0.01 + 0.002 + 0.05)).abs() < 1e-12);
        assert!((share - (10.0 + 20.0 + 40.0) / 200.0).abs() < 1e-12);
        assert_eq!(
            s.levels(&[0, 3, 1, 2]),
            vec![(0.0, 0.0), (0.3, 0.5), (0.1, 0.3), (0.2, 0.4)]
        );
        // Around base level 1: KL(base) + the changes of the layers that left it.
        let around = Sensitivity { base: 1, ..s };
        let (kl, _) = around.predict(&[1, 2, 0, 3]);
        let base_kl = 0.01;
        let expect = base_kl + (0.002 - 0.001) + (0.0 - 0.003) + (0.05 - 0.02);
        assert!((kl - expect).abs() < 1e-12, "{kl} vs {expect}");
    }
}
