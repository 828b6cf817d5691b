//! Calibration statistics: what each FFN neuron does over a corpus, and the per-layer
//! thresholds that reach a target sparsity.
//!
//! The dense forward pass hands every (token, layer) to [`CalibrationStats::observe`] with the
//! FFN input `x`, `a = act(gate·x)` and `u = up·x`. Per neuron we keep firing counts, mean and
//! max magnitudes; per layer, log histograms of |a|, |a·u| and |x|; and a strided sample of
//! whole (|a|, |u|) rows, from which exact per-layer quantiles of every score are taken at the
//! end (a score like |a|·mean|u| needs the final means, which a streaming histogram lacks).

use super::histogram::LogHistogram;
use super::mode::Score;

/// The target sparsities for which thresholds are stored (shares of neurons skipped).
pub const TARGETS: [f32; 19] = [
    0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80,
    0.85, 0.90, 0.95,
];

/// Statistics of one layer's FFN.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    pub n_ff: usize,
    pub n_embd: usize,
    /// Tokens observed.
    pub n_tokens: u64,
    /// Per neuron: tokens with |act(gate·x)| > ε.
    pub fires_act: Vec<u64>,
    /// Per neuron: tokens with |act(gate·x)·(up·x)| > ε.
    pub fires_prod: Vec<u64>,
    /// Per neuron: Σ |act(gate·x)|.
    pub sum_abs_act: Vec<f64>,
    /// Per neuron: Σ |up·x|.
    pub sum_abs_up: Vec<f64>,
    /// Per neuron: max |act(gate·x)|.
    pub max_abs_act: Vec<f32>,
    /// Per neuron: max |act(gate·x)·(up·x)|.
    pub max_abs_prod: Vec<f32>,
    pub hist_act: LogHistogram,
    pub hist_prod: LogHistogram,
    pub hist_input: LogHistogram,
    /// Sampled rows of |act| (n_ff each), for exact quantiles.
    sample_act: Vec<f32>,
    /// Sampled rows of |up| matching `sample_act`.
    sample_up: Vec<f32>,
    /// Sampled rows of |x| (n_embd each).
    sample_input: Vec<f32>,
}

impl LayerStats {
    pub fn new(n_embd: usize, n_ff: usize) -> Self {
        LayerStats {
            n_ff,
            n_embd,
            n_tokens: 0,
            fires_act: vec![0; n_ff],
            fires_prod: vec![0; n_ff],
            sum_abs_act: vec![0.0; n_ff],
            sum_abs_up: vec![0.0; n_ff],
            max_abs_act: vec![0.0; n_ff],
            max_abs_prod: vec![0.0; n_ff],
            hist_act: LogHistogram::new(),
            hist_prod: LogHistogram::new(),
            hist_input: LogHistogram::new(),
            sample_act: Vec::new(),
            sample_up: Vec::new(),
            sample_input: Vec::new(),
        }
    }

    pub fn n_samples(&self) -> usize {
        self.sample_act.len() / self.n_ff.max(1)
    }

    /// Mean |act(gate·x)| per neuron.
    pub fn mean_abs_act(&self) -> Vec<f32> {
        let n = self.n_tokens.max(1) as f64;
        self.sum_abs_act.iter().map(|s| (s / n) as f32).collect()
    }

    /// Mean |up·x| per neuron.
    pub fn mean_abs_up(&self) -> Vec<f32> {
        let n = self.n_tokens.max(1) as f64;
        self.sum_abs_up.iter().map(|s| (s / n) as f32).collect()
    }

    /// Per-neuron dead mask: never above `eps` in |act·up| over the corpus.
    pub fn dead_mask(&self) -> Vec<bool> {
        self.fires_prod.iter().map(|&f| f == 0).collect()
    }

    /// Neuron ids, most frequently firing first (ties: larger mean |act| first, then id).
    pub fn hot_order(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.n_ff as u32).collect();
        ids.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            self.fires_act[b]
                .cmp(&self.fires_act[a])
                .then(self.sum_abs_act[b].total_cmp(&self.sum_abs_act[a]))
                .then(a.cmp(&b))
        });
        ids
    }

    /// All sampled values of `score` for this layer (one per sampled token and neuron).
    fn sampled_scores(&self, score: Score) -> Vec<f32> {
        match score {
            Score::Act => self.sample_act.clone(),
            Score::Product => self
                .sample_act
                .iter()
                .zip(&self.sample_up)
                .map(|(a, u)| a * u)
                .collect(),
            Score::UpWeighted => self.weighted_rows(&self.sample_act, &self.mean_abs_up()),
            Score::ActWeighted => self.weighted_rows(&self.sample_up, &self.mean_abs_act()),
            // A choice between two scores, not a score: no values of its own.
            Score::Auto => Vec::new(),
        }
    }

    /// Each sampled row of `rows` (`n_ff` values per token) times the per-neuron `weights`.
    fn weighted_rows(&self, rows: &[f32], weights: &[f32]) -> Vec<f32> {
        rows.chunks_exact(self.n_ff)
            .flat_map(|row| row.iter().zip(weights).map(|(v, w)| v * w))
            .collect()
    }

    /// Thresholds on `score` reaching each of `targets` (share of values ≤ threshold), exact
    /// order statistics of the sample. Empty sample → all zeros.
    pub fn thresholds(&self, score: Score, targets: &[f32]) -> Vec<f32> {
        quantiles(self.sampled_scores(score), targets)
    }

    /// For each of `targets`: the share of Σ|act·up|² over the sample that a first stage
    /// skipping that share of the values of `score` would lose (the values below the
    /// threshold [`Self::thresholds`] gives). Empty sample → all zeros.
    pub fn first_stage_loss(&self, score: Score, targets: &[f32]) -> Vec<f32> {
        let scores = self.sampled_scores(score);
        let mut pairs: Vec<(f32, f64)> = scores
            .iter()
            .zip(self.sample_act.iter().zip(&self.sample_up))
            .map(|(&s, (&a, &u))| (s, (a as f64 * u as f64).powi(2)))
            .collect();
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        if pairs.is_empty() || total <= 0.0 {
            return vec![0.0; targets.len()];
        }
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut cum = Vec::with_capacity(pairs.len() + 1);
        cum.push(0.0f64);
        for p in &pairs {
            cum.push(cum.last().copied().unwrap_or(0.0) + p.1);
        }
        let n = pairs.len();
        targets
            .iter()
            .map(|&q| {
                let r = ((q.clamp(0.0, 1.0) as f64 * n as f64) as usize).min(n);
                (cum[r] / total) as f32
            })
            .collect()
    }

    /// Thresholds on |x| (FFN input entries) for TEAL input sparsity.
    pub fn input_thresholds(&self, targets: &[f32]) -> Vec<f32> {
        quantiles(self.sample_input.clone(), targets)
    }
}

/// Exact quantiles (the value at rank ⌊q·n⌋ of the sorted magnitudes) for each q.
pub fn quantiles(mut values: Vec<f32>, qs: &[f32]) -> Vec<f32> {
    if values.is_empty() {
        return vec![0.0; qs.len()];
    }
    values.sort_unstable_by(f32::total_cmp);
    let n = values.len();
    qs.iter()
        .map(|&q| {
            let r = ((q.clamp(0.0, 1.0) as f64 * n as f64) as usize).min(n - 1);
            values[r]
        })
        .collect()
}

/// Statistics of every layer plus the settings they were gathered with.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationStats {
    pub layers: Vec<LayerStats>,
    /// Firing threshold ε.
    pub eps: f32,
    /// Every `sample_stride`-th token's rows are kept for exact quantiles.
    pub sample_stride: u64,
    /// At most this many sampled rows per layer.
    pub max_samples: usize,
}

impl CalibrationStats {
    pub fn new(n_layer: usize, n_embd: usize, n_ff: usize, eps: f32) -> Self {
        CalibrationStats {
            layers: (0..n_layer)
                .map(|_| LayerStats::new(n_embd, n_ff))
                .collect(),
            eps,
            sample_stride: 4,
            max_samples: 1024,
        }
    }

    /// Record one token at one layer: FFN input `x`, `act = act(gate·x)`, `up = up·x`.
    /// Shapes that do not match the layer are ignored (the caller's bug, not the corpus's).
    pub fn observe(&mut self, layer: usize, x: &[f32], act: &[f32], up: &[f32]) {
        let eps = self.eps;
        let stride = self.sample_stride.max(1);
        let max_samples = self.max_samples;
        let Some(st) = self.layers.get_mut(layer) else {
            return;
        };
        if act.len() != st.n_ff || up.len() != st.n_ff || x.len() != st.n_embd {
            return;
        }
        for (j, (&a, &u)) in act.iter().zip(up).enumerate() {
            let aa = a.abs();
            let pa = (a * u).abs();
            st.fires_act[j] += (aa > eps) as u64;
            st.fires_prod[j] += (pa > eps) as u64;
            st.sum_abs_act[j] += aa as f64;
            st.sum_abs_up[j] += u.abs() as f64;
            if aa > st.max_abs_act[j] {
                st.max_abs_act[j] = aa;
            }
            if pa > st.max_abs_prod[j] {
                st.max_abs_prod[j] = pa;
            }
            st.hist_act.add(aa);
            st.hist_prod.add(pa);
        }
        st.hist_input.add_all(x);
        if st.n_tokens % stride == 0 && st.n_samples() < max_samples {
            st.sample_act.extend(act.iter().map(|v| v.abs()));
            st.sample_up.extend(up.iter().map(|v| v.abs()));
            st.sample_input.extend(x.iter().map(|v| v.abs()));
        }
        st.n_tokens += 1;
    }

    pub fn n_tokens(&self) -> u64 {
        self.layers.first().map_or(0, |l| l.n_tokens)
    }

    /// Share of all neurons that are dead.
    pub fn dead_fraction(&self) -> f64 {
        let (dead, total) = self.layers.iter().fold((0usize, 0usize), |(d, t), l| {
            (d + l.dead_mask().iter().filter(|&&x| x).count(), t + l.n_ff)
        });
        dead as f64 / total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_means_and_dead_mask() {
        let mut s = CalibrationStats::new(1, 2, 3, 0.01);
        s.sample_stride = 1;
        s.observe(0, &[1.0, -2.0], &[0.5, 0.0, -1.0], &[2.0, 3.0, 0.001]);
        s.observe(0, &[0.0, 1.0], &[-0.5, 0.0, 2.0], &[-4.0, 1.0, 0.001]);
        let l = &s.layers[0];
        assert_eq!(l.n_tokens, 2);
        assert_eq!(l.fires_act, vec![2, 0, 2]);
        // Neuron 2: |act·up| = 0.001, 0.002 ≤ ε: never fires by product.
        assert_eq!(l.fires_prod, vec![2, 0, 0]);
        assert_eq!(l.dead_mask(), vec![false, true, true]);
        assert_eq!(l.mean_abs_act(), vec![0.5, 0.0, 1.5]);
        assert_eq!(l.mean_abs_up(), vec![3.0, 2.0, 0.001]);
        assert_eq!(l.max_abs_prod, vec![2.0, 0.0, 0.002]);
        assert_eq!(l.hot_order(), vec![2, 0, 1]);
        assert_eq!(l.n_samples(), 2);
        assert!((s.dead_fraction() - 2.0 / 3.0).abs() < 1e-12);
        // Mismatched shapes are ignored.
        s.observe(0, &[1.0], &[1.0], &[1.0]);
        s.observe(5, &[1.0, 1.0], &[1.0; 3], &[1.0; 3]);
        assert_eq!(s.n_tokens(), 2);
    }

    /// Thresholds reach their target: the share of sampled scores at or below equals it.
    #[test]
    fn thresholds_reach_targets() {
        let n_ff = 64;
        let mut s = CalibrationStats::new(1, 4, n_ff, 1e-3);
        s.sample_stride = 1;
        let mut state = 7u64;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for _ in 0..200 {
            let x: Vec<f32> = (0..4).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..n_ff).map(|_| rnd()).collect();
            let u: Vec<f32> = (0..n_ff).map(|_| rnd() * 3.0).collect();
            s.observe(0, &x, &a, &u);
        }
        let l = &s.layers[0];
        for score in Score::ALL {
            let thr = l.thresholds(score, &TARGETS);
            let vals = l.sampled_scores(score);
            for (t, q) in thr.iter().zip(TARGETS) {
                let share = vals.iter().filter(|v| **v < *t).count() as f32 / vals.len() as f32;
                assert!((share - q).abs() < 1e-3, "{score}: {share} vs {q}");
            }
            assert!(thr.windows(2).all(|w| w[0] <= w[1]));
        }
        // First-stage losses: from 0 to the whole Σh², non-decreasing, and never below the
        // product score's (which skips the smallest |act·up| themselves: the least loss for
        // the count).
        let oracle = l.first_stage_loss(Score::Product, &TARGETS);
        for score in [Score::Act, Score::UpWeighted, Score::ActWeighted] {
            let loss = l.first_stage_loss(score, &TARGETS);
            assert!(loss.windows(2).all(|w| w[0] <= w[1]), "{score}");
            assert!(loss.iter().all(|&v| (0.0..=1.0).contains(&v)), "{score}");
            for (v, o) in loss.iter().zip(&oracle) {
                assert!(*v >= *o - 1e-6, "{score}: {v} below the oracle's {o}");
            }
            assert!(
                loss[TARGETS.len() / 2] > oracle[TARGETS.len() / 2],
                "{score}"
            );
        }
        assert_eq!(
            l.first_stage_loss(Score::UpWeighted, &[0.0, 1.0]),
            vec![0.0, 1.0]
        );
    }
}
