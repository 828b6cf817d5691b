//! Turning a `--sparsity` mode and a sidecar into one [`LayerPlan`] per layer, and adding up
//! what the plans did over a run.

use super::ffn::{FfnStepStats, LayerPlan, LayerRule};
use super::mode::{Rule, Score, SparsityMode};
use super::path_costs::{PathClass, PathSet};
use super::sidecar::{interpolate_threshold, LayerCalibration, Sidecar};
use crate::{bail, Error, Result};

/// Resolve `mode` into per-layer plans for a model of `n_layer` layers. `budget:P` is
/// resolved through the sidecar's budget table (recursively into the stored mode).
pub fn resolve_plans(
    mode: &SparsityMode,
    sidecar: Option<&Sidecar>,
    n_layer: usize,
) -> Result<Vec<LayerPlan>> {
    let need = |what: &str| -> Result<&Sidecar> {
        sidecar.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "sparsity mode {what} needs a calibration sidecar (--mask MODEL.ghost, made by `ghost calibrate`)"
            ))
        })
    };
    if let Some(s) = sidecar {
        if s.n_layer != n_layer {
            bail!(
                InvalidArgument,
                "sidecar has {} layers, the model {n_layer}",
                s.n_layer
            );
        }
    }
    let up_first = matches!(
        mode.rule,
        Some(
            Rule::Target {
                score: Score::ActWeighted | Score::Auto,
                ..
            } | Rule::Cascade {
                first: Score::ActWeighted | Score::Auto,
                ..
            }
        )
    );
    if up_first {
        require_up_first_thresholds(need("actw")?)?;
    }
    if let Some(Rule::Budget(p)) = mode.rule {
        let s = need("budget")?;
        let entry = s.budget_for(p).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the sidecar has no setting within a {p}% perplexity budget (smallest stored: {:?})",
                s.budget
                    .iter()
                    .map(|b| b.max_ppl_increase_pct)
                    .reduce(f32::min)
            ))
        })?;
        let mut inner: SparsityMode = entry.mode.parse()?;
        if matches!(inner.rule, Some(Rule::Budget(_))) {
            bail!(
                Format,
                "sidecar budget entry {:?} is itself a budget",
                entry.mode
            );
        }
        inner.dead |= mode.dead;
        if let Some(levels) = &entry.layer_levels {
            let Some(Rule::Cascade { first, .. }) = inner.rule else {
                bail!(
                    Format,
                    "sidecar budget entry {:?} has per-layer levels but is not a cascade",
                    entry.mode
                );
            };
            let plans = resolve_layered_cascade(s, inner.dead, first, levels)?;
            return Ok(with_calibrated_shares(plans, s, inner.input, inner.coarse));
        }
        return resolve_plans(&inner, sidecar, n_layer);
    }
    let mut plans = Vec::with_capacity(n_layer);
    for il in 0..n_layer {
        let live = if mode.dead {
            LayerPlan::live_from_dead(&need("dead")?.layers[il].dead)
        } else {
            None
        };
        let layer_thr = |score: Score, s: f32| -> Result<f32> {
            let sc = need("target")?;
            Ok(interpolate_threshold(
                &sc.targets,
                sc.layers[il].thresholds(score),
                s,
            ))
        };
        let rule = match mode.rule {
            None => LayerRule::Dense,
            Some(Rule::Gate(t)) => LayerRule::Act(t),
            Some(Rule::Stat(k)) => LayerRule::Stat(k),
            Some(Rule::Target { sparsity, score }) => {
                let score = match score {
                    Score::Auto => {
                        let sc = need("target")?;
                        auto_first_score(&sc.targets, &sc.layers[il], sparsity)
                    }
                    s => s,
                };
                let t = layer_thr(score, sparsity)?;
                match score {
                    Score::Act => LayerRule::Act(t),
                    Score::Product => LayerRule::Product(t),
                    Score::UpWeighted => LayerRule::Scaled {
                        t,
                        scale: need("target")?.layers[il].mean_abs_up.clone(),
                    },
                    Score::ActWeighted => LayerRule::UpFirst {
                        t,
                        scale: need("target")?.layers[il].mean_abs_act.clone(),
                        t_prod: -1.0,
                    },
                    Score::Auto => unreachable!("chosen above"),
                }
            }
            Some(Rule::Cascade {
                skip_all,
                skip_down,
                first,
            }) => cascade_rule(need("cascade")?, il, first, skip_all, skip_down),
            Some(Rule::Budget(_)) => unreachable!("resolved above"),
        };
        plans.push(LayerPlan::new(live, rule));
    }
    Ok(match (mode.input, mode.coarse) {
        (None, None) => plans,
        (_, None) => with_calibrated_shares(plans, need("input")?, mode.input, None),
        _ => with_calibrated_shares(plans, need("coarse")?, mode.input, mode.coarse),
    })
}

/// `plans` with each layer's calibrated thresholds for the shares of its parts that take
/// one: the input threshold for the input sparsity `input`, and the product threshold for
/// the coarse share `coarse` (active neurons below it read the coarse down copy).
fn with_calibrated_shares(
    plans: Vec<LayerPlan>,
    sidecar: &Sidecar,
    input: Option<f32>,
    coarse: Option<f32>,
) -> Vec<LayerPlan> {
    let thr = |table: &[f32], share: Option<f32>| {
        share.map(|s| interpolate_threshold(&sidecar.targets, table, s))
    };
    plans
        .into_iter()
        .zip(&sidecar.layers)
        .map(|(p, layer)| {
            let p = match input {
                Some(_) => p.with_input(thr(&layer.thr_input, input)),
                None => p,
            };
            match coarse {
                Some(_) => p.with_coarse(thr(layer.thresholds(Score::Product), coarse)),
                None => p,
            }
        })
        .collect()
}

/// Whether every layer of `sidecar` has thresholds for the up-first score (sidecars written
/// before it existed do not): an error naming the fix otherwise.
fn require_up_first_thresholds(sidecar: &Sidecar) -> Result<()> {
    if sidecar
        .layers
        .iter()
        .any(|l| l.thr_actw.is_empty() || l.loss_upw.is_empty() || l.loss_actw.is_empty())
    {
        bail!(
            InvalidArgument,
            "this sidecar has no thresholds for the up-first score `actw` (it was calibrated \
             before that score existed): run `ghost calibrate` again"
        );
    }
    Ok(())
}

/// What `auto` picks for a layer whose first stage skips the `share` of neurons: `actw` (up
/// first) where it lost less of Σ|act·up|² on the calibration sample than `upw`, else `upw`.
fn auto_first_score(targets: &[f32], layer: &LayerCalibration, share: f32) -> Score {
    let loss = |table: &[f32]| interpolate_threshold(targets, table, share);
    if loss(&layer.loss_actw) < loss(&layer.loss_upw) {
        Score::ActWeighted
    } else {
        Score::UpWeighted
    }
}

/// The cascade rule of layer `il`: skip the second projection and down for the `skip_all`
/// share by `first` (`Act` or `UpWeighted`: gate first, up and down skipped; `ActWeighted`:
/// up first, gate and down skipped), then down for the `skip_down` share by product.
fn cascade_rule(
    sidecar: &Sidecar,
    il: usize,
    first: Score,
    skip_all: f32,
    skip_down: f32,
) -> LayerRule {
    let layer = &sidecar.layers[il];
    let thr =
        |score: Score, s: f32| interpolate_threshold(&sidecar.targets, layer.thresholds(score), s);
    let t_prod = thr(Score::Product, skip_down);
    let first = match first {
        Score::Auto => auto_first_score(&sidecar.targets, layer, skip_all),
        s => s,
    };
    match first {
        Score::UpWeighted => LayerRule::ScaledCascade {
            t: thr(Score::UpWeighted, skip_all),
            scale: layer.mean_abs_up.clone(),
            t_prod,
        },
        Score::ActWeighted => LayerRule::UpFirst {
            t: thr(Score::ActWeighted, skip_all),
            scale: layer.mean_abs_act.clone(),
            t_prod,
        },
        _ => LayerRule::Cascade {
            t_act: thr(Score::Act, skip_all),
            t_prod,
        },
    }
}

/// Plans for a cascade whose shares differ per layer: `levels[layer] = (skip_all, skip_down)`;
/// a `(0, 0)` layer runs dense. With `dead`, the sidecar's dead neurons are dropped too.
pub fn resolve_layered_cascade(
    sidecar: &Sidecar,
    dead: bool,
    first: Score,
    levels: &[(f32, f32)],
) -> Result<Vec<LayerPlan>> {
    if matches!(first, Score::ActWeighted | Score::Auto) {
        require_up_first_thresholds(sidecar)?;
    }
    if levels.len() != sidecar.n_layer {
        bail!(
            InvalidArgument,
            "{} per-layer levels for {} layers",
            levels.len(),
            sidecar.n_layer
        );
    }
    Ok(levels
        .iter()
        .enumerate()
        .map(|(il, &(skip_all, skip_down))| {
            let live = if dead {
                LayerPlan::live_from_dead(&sidecar.layers[il].dead)
            } else {
                None
            };
            let rule = if skip_all <= 0.0 && skip_down <= 0.0 {
                LayerRule::Dense
            } else {
                cascade_rule(sidecar, il, first, skip_all, skip_down)
            };
            LayerPlan::new(live, rule)
        })
        .collect())
}

/// Totals of [`FfnStepStats`] per layer over a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparsityTally {
    /// Per layer: steps, Σ active neurons, Σ n_ff, Σ bytes read, Σ dense bytes.
    pub layers: Vec<LayerTally>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LayerTally {
    pub steps: u64,
    pub active: u64,
    pub up_rows: u64,
    /// Σ active neurons whose down row came from the coarse copy.
    pub coarse: u64,
    pub neurons: u64,
    pub bytes_read: u64,
    pub bytes_dense: u64,
    /// Steps that took each sparse path, indexed as [`PathClass::ALL`].
    pub path_steps: [u64; PathClass::ALL.len()],
}

impl SparsityTally {
    pub fn new(n_layer: usize) -> Self {
        SparsityTally {
            layers: vec![LayerTally::default(); n_layer],
        }
    }

    pub fn add(&mut self, layer: usize, s: &FfnStepStats) {
        if let Some(t) = self.layers.get_mut(layer) {
            t.steps += 1;
            t.active += s.n_active as u64;
            t.up_rows += s.n_up as u64;
            t.coarse += s.n_coarse as u64;
            t.neurons += s.n_ff as u64;
            t.bytes_read += s.bytes_read as u64;
            t.bytes_dense += s.bytes_dense as u64;
            for (n, c) in t.path_steps.iter_mut().zip(PathClass::ALL) {
                *n += u64::from(s.paths.contains(c));
            }
        }
    }

    pub fn merge(&mut self, other: &SparsityTally) {
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            a.steps += b.steps;
            a.active += b.active;
            a.up_rows += b.up_rows;
            a.coarse += b.coarse;
            a.neurons += b.neurons;
            a.bytes_read += b.bytes_read;
            a.bytes_dense += b.bytes_dense;
            for (x, y) in a.path_steps.iter_mut().zip(&b.path_steps) {
                *x += y;
            }
        }
    }

    /// The sparse paths some step of some layer took.
    pub fn paths_taken(&self) -> PathSet {
        let mut set = PathSet::EMPTY;
        for t in &self.layers {
            for (&n, c) in t.path_steps.iter().zip(PathClass::ALL) {
                if n > 0 {
                    set.insert(c);
                }
            }
        }
        set
    }

    /// Share of neurons whose down row was skipped, per layer.
    pub fn layer_sparsity(&self) -> Vec<f64> {
        self.layers
            .iter()
            .map(|t| 1.0 - t.active as f64 / t.neurons.max(1) as f64)
            .collect()
    }

    /// Share of neurons skipped over all layers.
    pub fn sparsity(&self) -> f64 {
        let (a, n) = self
            .layers
            .iter()
            .fold((0u64, 0u64), |(a, n), t| (a + t.active, n + t.neurons));
        1.0 - a as f64 / n.max(1) as f64
    }

    /// Share of the neurons whose down row came from the coarse copy, over all layers and
    /// steps.
    pub fn coarse_share(&self) -> f64 {
        let (c, n) = self
            .layers
            .iter()
            .fold((0u64, 0u64), |(c, n), t| (c + t.coarse, n + t.neurons));
        c as f64 / n.max(1) as f64
    }

    /// Share of FFN weight bytes not read, over all layers and steps.
    pub fn bytes_skipped(&self) -> f64 {
        let (r, d) = self.layers.iter().fold((0u64, 0u64), |(r, d), t| {
            (r + t.bytes_read, d + t.bytes_dense)
        });
        1.0 - r as f64 / d.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_without_sidecar() {
        let p = resolve_plans(&"gate:0.1".parse().unwrap(), None, 3).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].rule, LayerRule::Act(0.1));
        assert!(p[0].live.is_none());
        let p = resolve_plans(&"dense".parse().unwrap(), None, 2).unwrap();
        assert_eq!(p[1], LayerPlan::DENSE);
        for m in [
            "dead",
            "target:0.4",
            "budget:2",
            "input:0.3",
            "cascade:0.1:0.2",
            "cascade:0.1:0.2:upw",
        ] {
            assert!(
                matches!(
                    resolve_plans(&m.parse().unwrap(), None, 2),
                    Err(Error::InvalidArgument(_))
                ),
                "{m}"
            );
        }
    }

    #[test]
    fn tally_sums() {
        let mut t = SparsityTally::new(2);
        let s = FfnStepStats {
            n_ff: 10,
            n_active: 6,
            n_up: 8,
            n_coarse: 0,
            bytes_read: 70,
            bytes_dense: 100,
            paths: PathSet::EMPTY.with(PathClass::ExactDown),
        };
        t.add(0, &s);
        t.add(
            1,
            &FfnStepStats {
                n_active: 10,
                bytes_read: 100,
                paths: PathSet::EMPTY.with(PathClass::InputMajor),
                ..s
            },
        );
        assert!((t.sparsity() - 0.2).abs() < 1e-12);
        assert!((t.bytes_skipped() - 0.15).abs() < 1e-12);
        assert_eq!(t.layer_sparsity(), vec![0.4, 0.0]);
        t.add(0, &s);
        assert_eq!(t.layers[0].path_steps, [0, 0, 2, 0]);
        assert_eq!(t.layers[1].path_steps, [0, 1, 0, 0]);
        assert_eq!(
            t.paths_taken(),
            PathSet::EMPTY
                .with(PathClass::ExactDown)
                .with(PathClass::InputMajor)
        );
        let mut m = SparsityTally::new(2);
        m.merge(&t);
        m.merge(&t);
        assert_eq!(m.layers[0].path_steps, [0, 0, 4, 0]);
    }
}
