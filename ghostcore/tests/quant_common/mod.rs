//! Shared helpers for the quant kernel tests: a deterministic PRNG and generators of
//! random and extreme weight blocks for every computable type.

#![allow(dead_code)]

use ghostcore::quant::{dequantize_row, GgmlType};

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }
    /// Roughly normal (sum of uniforms), with occasional large outliers like real activations.
    pub fn activation(&mut self) -> f32 {
        let g = (0..4).map(|_| self.signed()).sum::<f32>();
        if self.next_u64() % 64 == 0 {
            g * 20.0
        } else {
            g
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Weight types with a dot-product kernel.
pub const DOT_TYPES: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Byte offsets (within a block) of the f16 scale fields of `ty` (empty for float types).
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

pub fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// Set every scale field of every block in `row` with `scale(block, field)`.
pub fn set_scales(ty: GgmlType, row: &mut [u8], mut scale: impl FnMut(usize, usize) -> f32) {
    let ts = ty.type_size();
    for (b, blk) in row.chunks_exact_mut(ts).enumerate() {
        if ty == GgmlType::Q8_K {
            blk[..4].copy_from_slice(&scale(b, 0).to_le_bytes());
            continue;
        }
        for (k, &off) in f16_fields(ty).iter().enumerate() {
            blk[off..off + 2].copy_from_slice(&f16_bytes(scale(b, k)));
        }
    }
}

/// A random row of `n` weights of type `ty`: random quant bytes, finite scales of mixed sign
/// and magnitude (float types: random finite values).
pub fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let bytes = ty.row_bytes(n as u64).unwrap() as usize;
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.activation().to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n).flat_map(|_| f16_bytes(rng.activation())).collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| ((rng.activation().to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
        _ => {
            let mut row = rng.bytes(bytes);
            let mut vals = Vec::new();
            for _ in 0..row.len() {
                vals.push(rng.signed() * 0.05);
            }
            let mut i = 0;
            set_scales(ty, &mut row, |_, _| {
                i += 1;
                vals[i]
            });
            row
        }
    }
}

pub fn dequant(ty: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, row, &mut out).unwrap();
    out
}
