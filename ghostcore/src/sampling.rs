//! Token sampling with llama.cpp's semantics and chain order:
//! penalties → top-k → top-p → min-p → temperature → draw.
//!
//! A temperature of 0 (or below) is greedy: the first token with the highest logit.
//! Draws use an in-house xoshiro256** generator seeded from `seed`, so a fixed seed gives a
//! fixed sequence (it does not reproduce llama.cpp's mt19937 draws).

use std::collections::{HashMap, VecDeque};

/// Sampling settings; defaults are llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    /// 0 or less: greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Nucleus: smallest set with cumulative probability ≥ `top_p`; 1.0 disables.
    pub top_p: f32,
    /// Drop tokens with probability below `min_p` × the top probability; 0 disables.
    pub min_p: f32,
    /// Repetition penalty over the last `repeat_last_n` tokens; 1.0 disables.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding (argmax).
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// xoshiro256** seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A candidate token and its (possibly modified) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Applies the repetition, frequency and presence penalties (llama.cpp `penalties`):
/// for a token seen `c > 0` times, a positive logit is divided by `repeat`, a negative one
/// multiplied, then `c * freq + present` is subtracted.
pub fn apply_penalties(
    cands: &mut [Candidate],
    counts: &HashMap<u32, usize>,
    repeat: f32,
    freq: f32,
    present: f32,
) {
    if counts.is_empty() || (repeat == 1.0 && freq == 0.0 && present == 0.0) {
        return;
    }
    for c in cands.iter_mut() {
        let Some(&n) = counts.get(&c.id) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        if c.logit <= 0.0 {
            c.logit *= repeat;
        } else {
            c.logit /= repeat;
        }
        c.logit -= n as f32 * freq + present;
    }
}

fn sort_desc(cands: &mut [Candidate]) {
    cands.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
}

/// Keeps the `k` highest logits, sorted descending (`k == 0`: no-op, unsorted).
pub fn top_k(cands: &mut Vec<Candidate>, k: usize) {
    if k == 0 || k >= cands.len() {
        return;
    }
    cands.select_nth_unstable_by(k - 1, |a, b| {
        b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
    });
    cands.truncate(k);
    sort_desc(cands);
}

/// Softmax probabilities of the (sorted or not) candidates.
pub fn softmax(cands: &[Candidate], probs: &mut Vec<f32>) {
    probs.clear();
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for c in cands {
        let p = (c.logit - max).exp();
        probs.push(p);
        sum += p as f64;
    }
    let inv = (1.0 / sum) as f32;
    probs.iter_mut().for_each(|p| *p *= inv);
}

/// Keeps the smallest prefix (by descending probability) whose cumulative probability
/// reaches `p`, at least `min_keep` tokens.
pub fn top_p(cands: &mut Vec<Candidate>, p: f32, min_keep: usize, probs: &mut Vec<f32>) {
    if p >= 1.0 || cands.len() <= 1 {
        return;
    }
    sort_desc(cands);
    softmax(cands, probs);
    let mut cum = 0.0f32;
    let mut keep = cands.len();
    for (i, &pr) in probs.iter().enumerate() {
        cum += pr;
        if cum >= p && i + 1 >= min_keep {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep);
}

/// Keeps tokens whose probability is at least `p` × the highest probability
/// (i.e. `logit ≥ max_logit + ln p`), at least `min_keep` tokens.
pub fn min_p(cands: &mut Vec<Candidate>, p: f32, min_keep: usize) {
    if p <= 0.0 || cands.len() <= 1 {
        return;
    }
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + p.ln();
    let kept: usize = cands.iter().filter(|c| c.logit >= threshold).count();
    if kept >= min_keep {
        cands.retain(|c| c.logit >= threshold);
    } else {
        sort_desc(cands);
        cands.truncate(min_keep);
    }
}

/// Index of the highest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// A stateful sampler: the chain plus the token history the penalties need.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    history: VecDeque<u32>,
    counts: HashMap<u32, usize>,
    cands: Vec<Candidate>,
    probs: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        let rng = Rng::new(params.seed);
        Sampler {
            params,
            rng,
            history: VecDeque::new(),
            counts: HashMap::new(),
            cands: Vec::new(),
            probs: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Forgets the history and reseeds.
    pub fn reset(&mut self) {
        self.rng = Rng::new(self.params.seed);
        self.history.clear();
        self.counts.clear();
    }

    /// Records a token (prompt or generated) for the penalties.
    pub fn accept(&mut self, token: u32) {
        if self.params.repeat_last_n == 0 {
            return;
        }
        if self.history.len() == self.params.repeat_last_n {
            if let Some(old) = self.history.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.history.push_back(token);
        *self.counts.entry(token).or_default() += 1;
    }

    /// Picks the next token from `logits` (does not [`accept`](Self::accept) it).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let penalize =
            p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
        if p.temperature <= 0.0 && !penalize {
            return argmax(logits) as u32;
        }
        self.cands.clear();
        self.cands
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: l,
            }));
        apply_penalties(
            &mut self.cands,
            &self.counts,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        );
        if p.temperature <= 0.0 {
            let mut best = 0;
            for (i, c) in self.cands.iter().enumerate() {
                if c.logit > self.cands[best].logit {
                    best = i;
                }
            }
            return self.cands[best].id;
        }
        top_k(&mut self.cands, p.top_k);
        top_p(&mut self.cands, p.top_p, 1, &mut self.probs);
        min_p(&mut self.cands, p.min_p, 1);
        let t = p.temperature;
        self.cands.iter_mut().for_each(|c| c.logit /= t);
        softmax(&self.cands, &mut self.probs);
        let r = self.rng.next_f64() as f32;
        let mut cum = 0.0f32;
        for (c, &pr) in self.cands.iter().zip(&self.probs) {
            cum += pr;
            if r < cum {
                return c.id;
            }
        }
        self.cands.last().map(|c| c.id).unwrap_or(0)
    }
}
