//! A log-spaced magnitude histogram: constant relative resolution over many decades, so one
//! layout fits gate activations (around 1e-3..10) and products alike.

/// Smallest magnitude with its own bin: 2^MIN_LOG2. Smaller values (and zeros) share bin 0.
pub const MIN_LOG2: i32 = -24;
/// Largest finite bin edge: 2^MAX_LOG2. Larger values share the last bin.
pub const MAX_LOG2: i32 = 16;
/// Bins per factor of two (resolution 2^(1/16) ≈ 4.4%).
pub const BINS_PER_OCTAVE: usize = 16;
/// Total bins: underflow, the log bins, overflow.
pub const N_BINS: usize = (MAX_LOG2 - MIN_LOG2) as usize * BINS_PER_OCTAVE + 2;

/// Counts of |v| in log-spaced bins.
#[derive(Clone, Debug, PartialEq)]
pub struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bin holding magnitude `m` (≥ 0; NaN counts as 0).
pub fn bin_of(m: f32) -> usize {
    if m.is_nan() || m < f32::powi(2.0, MIN_LOG2) {
        return 0;
    }
    let pos = (m.log2() - MIN_LOG2 as f32) * BINS_PER_OCTAVE as f32;
    if pos >= (N_BINS - 2) as f32 {
        return N_BINS - 1;
    }
    1 + pos as usize
}

/// Lower edge of bin `b` (bin 0 starts at 0).
pub fn bin_lower_edge(b: usize) -> f32 {
    if b == 0 {
        0.0
    } else {
        f32::powf(
            2.0,
            MIN_LOG2 as f32 + (b - 1) as f32 / BINS_PER_OCTAVE as f32,
        )
    }
}

impl LogHistogram {
    pub fn new() -> Self {
        LogHistogram {
            counts: vec![0; N_BINS],
            total: 0,
        }
    }

    /// Rebuild from stored counts; `None` when the length is not [`N_BINS`].
    pub fn from_counts(counts: Vec<u64>) -> Option<Self> {
        if counts.len() != N_BINS {
            return None;
        }
        let total = counts.iter().sum();
        Some(LogHistogram { counts, total })
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, magnitude: f32) {
        self.counts[bin_of(magnitude.abs())] += 1;
        self.total += 1;
    }

    pub fn add_all(&mut self, values: &[f32]) {
        for &v in values {
            self.add(v);
        }
    }

    pub fn merge(&mut self, other: &LogHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// A magnitude `t` such that about a share `q` of the samples are ≤ `t` (geometric
    /// interpolation inside the bin). `None` for an empty histogram.
    pub fn quantile(&self, q: f32) -> Option<f32> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0) as f64;
        let want = q * self.total as f64;
        let mut cum = 0f64;
        for (b, &c) in self.counts.iter().enumerate() {
            let next = cum + c as f64;
            if next >= want && c > 0 {
                let frac = ((want - cum) / c as f64).clamp(0.0, 1.0) as f32;
                let lo = bin_lower_edge(b);
                return Some(if b == 0 {
                    lo + frac * bin_lower_edge(1)
                } else if b == N_BINS - 1 {
                    lo
                } else {
                    let hi = bin_lower_edge(b + 1);
                    lo * (hi / lo).powf(frac)
                });
            }
            cum = next;
        }
        Some(bin_lower_edge(N_BINS - 1))
    }

    /// Share of samples with magnitude ≤ `t` (bin resolution).
    pub fn share_below(&self, t: f32) -> f32 {
        if self.total == 0 {
            return 0.0;
        }
        let b = bin_of(t.abs());
        let below: u64 = self.counts[..b].iter().sum();
        below as f32 / self.total as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_monotonic_and_edges_consistent() {
        let mut last = 0;
        let mut m = 1e-9f32;
        while m < 1e6 {
            let b = bin_of(m);
            assert!(b >= last);
            assert!(bin_lower_edge(b) <= m * 1.0001, "{m} in bin {b}");
            if b + 1 < N_BINS {
                assert!(m < bin_lower_edge(b + 1) * 1.0001);
            }
            last = b;
            m *= 1.01;
        }
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(f32::NAN), 0);
        assert_eq!(bin_of(f32::INFINITY), N_BINS - 1);
    }

    /// The quantile agrees with the exact order statistic of the samples to within one bin.
    #[test]
    fn quantile_matches_sorted_samples() {
        // Deterministic log-uniform-ish samples via an LCG.
        let mut state = 12345u64;
        let mut xs = Vec::new();
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            xs.push((10f64.powf(-4.0 + 5.0 * u)) as f32);
        }
        let mut h = LogHistogram::new();
        h.add_all(&xs);
        xs.sort_by(f32::total_cmp);
        for q in [0.1f32, 0.25, 0.5, 0.9] {
            let exact = xs[(q * xs.len() as f32) as usize];
            let est = h.quantile(q).unwrap();
            let ratio = est / exact;
            assert!(
                (0.95..1.05).contains(&ratio),
                "q={q}: est {est} exact {exact}"
            );
            let share = h.share_below(exact);
            assert!((share - q).abs() < 0.02, "share {share} vs {q}");
        }
    }
}
