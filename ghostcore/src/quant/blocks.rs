//! Byte layouts of ggml's quantized blocks (`ggml-common.h`), as `#[repr(C)]` structs.
//!
//! Every field is a byte array, so each struct has alignment 1 and no padding: any `&[u8]`
//! of the right length can be viewed as a block slice without copying, whatever its address.
//! Multi-byte fields are little-endian (GGUF is little-endian) and are decoded by the
//! accessor methods.

use crate::error::Result;
use crate::quant::types::GgmlType;
use crate::quant::QK_K;

/// Weights per block of the 32-wide formats (Q4_0 ... Q8_1).
pub const QK32: usize = 32;

/// Decode a little-endian IEEE half.
#[inline(always)]
pub fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// A ggml block layout.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs made only of `u8`/`i8` arrays (alignment 1,
/// no padding, every bit pattern valid), with `size_of::<Self>() == Self::TYPE.type_size()`.
pub unsafe trait Block: Sized + Copy + 'static {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
}

/// View `bytes` as a slice of blocks. Errors if the length is not a whole number of blocks.
pub fn cast_blocks<B: Block>(bytes: &[u8]) -> Result<&[B]> {
    let size = std::mem::size_of::<B>();
    if bytes.len() % size != 0 {
        crate::bail!(
            InvalidArgument,
            "{} bytes is not a whole number of {} blocks ({} bytes each)",
            bytes.len(),
            B::TYPE,
            size
        );
    }
    Ok(cast_blocks_prefix(bytes))
}

/// View the first `bytes.len() / size_of::<B>()` whole blocks of `bytes`.
#[inline(always)]
pub fn cast_blocks_prefix<B: Block>(bytes: &[u8]) -> &[B] {
    let n = bytes.len() / std::mem::size_of::<B>();
    // SAFETY: `B: Block` guarantees alignment 1, no padding and that every bit pattern is a
    // valid `B`; the first `n * size_of::<B>()` bytes lie inside `bytes`, which stays
    // borrowed (immutably) for the returned lifetime.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) }
}

/// Mutable version of [`cast_blocks`].
pub fn cast_blocks_mut<B: Block>(bytes: &mut [u8]) -> Result<&mut [B]> {
    let size = std::mem::size_of::<B>();
    if bytes.len() % size != 0 {
        crate::bail!(
            InvalidArgument,
            "{} bytes is not a whole number of {} blocks ({} bytes each)",
            bytes.len(),
            B::TYPE,
            size
        );
    }
    let n = bytes.len() / size;
    // SAFETY: as in `cast_blocks_prefix`; the exclusive borrow of `bytes` is carried over to
    // the result, so no alias exists while it lives.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) })
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $ty:expr, { $($(#[$fm:meta])* $field:ident : [$ft:ty; $n:expr]),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $($(#[$fm])* pub $field: [$ft; $n],)*
        }
        // SAFETY: the struct is `#[repr(C)]` and made only of `u8`/`i8` arrays (checked by the
        // macro's field types), and the size assertion below ties it to the type table.
        unsafe impl Block for $name {
            const TYPE: GgmlType = $ty;
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $ty.type_size());
        const _: () = assert!(std::mem::align_of::<$name>() == 1);
    };
}

block!(
    /// 32 weights: `w = d * (q - 8)`, q in 0..16.
    BlockQ4_0, GgmlType::Q4_0, { d: [u8; 2], qs: [u8; QK32 / 2] });
block!(
    /// 32 weights: `w = d * q + m`, q in 0..16.
    BlockQ4_1, GgmlType::Q4_1, { d: [u8; 2], m: [u8; 2], qs: [u8; QK32 / 2] });
block!(
    /// 32 weights: `w = d * (q - 16)`, q in 0..32 (fifth bit in `qh`).
    BlockQ5_0, GgmlType::Q5_0, { d: [u8; 2], qh: [u8; 4], qs: [u8; QK32 / 2] });
block!(
    /// 32 weights: `w = d * q + m`, q in 0..32 (fifth bit in `qh`).
    BlockQ5_1, GgmlType::Q5_1, { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; QK32 / 2] });
block!(
    /// 32 weights: `w = d * q`, q in -128..128.
    BlockQ8_0, GgmlType::Q8_0, { d: [u8; 2], qs: [i8; QK32] });
block!(
    /// 32 activations: `x = d * q`; `s = d * Σq` (f16).
    BlockQ8_1, GgmlType::Q8_1, { d: [u8; 2], s: [u8; 2], qs: [i8; QK32] });
block!(
    /// 256 weights in 16 groups of 16: `w = d * (sc & 15) * q - dmin * (sc >> 4)`, q in 0..4.
    BlockQ2K, GgmlType::Q2_K, { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: [u8; 2], dmin: [u8; 2] });
block!(
    /// 256 weights in 16 groups of 16, 6-bit signed scales, 3-bit signed quants.
    BlockQ3K, GgmlType::Q3_K, { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; 12], d: [u8; 2] });
block!(
    /// 256 weights in 8 groups of 32, 6-bit scales and mins, 4-bit quants.
    BlockQ4K, GgmlType::Q4_K, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; QK_K / 2] });
block!(
    /// 256 weights in 8 groups of 32, 6-bit scales and mins, 5-bit quants.
    BlockQ5K, GgmlType::Q5_K, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; QK_K / 8], qs: [u8; QK_K / 2] });
block!(
    /// 256 weights in 16 groups of 16, 8-bit signed scales, 6-bit quants offset by 32.
    BlockQ6K, GgmlType::Q6_K, { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: [u8; 2] });
block!(
    /// 256 activations: `x = d * q` (f32 `d`), `bsums[g] = Σ q[16g..16g+16]`.
    BlockQ8K, GgmlType::Q8_K, { d: [u8; 4], qs: [i8; QK_K], bsums: [u8; 2 * QK_K / 16] });

impl BlockQ4_0 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
}
impl BlockQ4_1 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
}
impl BlockQ5_0 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl BlockQ5_1 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn m(&self) -> f32 {
        f16_le(self.m)
    }
    #[inline(always)]
    pub fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}
impl BlockQ8_0 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
}
impl BlockQ8_1 {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn s(&self) -> f32 {
        f16_le(self.s)
    }
}
impl BlockQ2K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl BlockQ3K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    /// The 16 six-bit scales, as stored (0..64; subtract 32 for the signed value).
    #[inline(always)]
    pub fn unpacked_scales(&self) -> [u8; 16] {
        const LOW4: u32 = 0x0f0f_0f0f;
        const TWO: u32 = 0x0303_0303;
        let s = &self.scales;
        let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
        let hi = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
        let words = [
            (a0 & LOW4) | ((hi & TWO) << 4),
            (a1 & LOW4) | (((hi >> 2) & TWO) << 4),
            ((a0 >> 4) & LOW4) | (((hi >> 4) & TWO) << 4),
            ((a1 >> 4) & LOW4) | (((hi >> 6) & TWO) << 4),
        ];
        let mut out = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// Unpack the eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block
/// (ggml's `get_scale_min_k4` for j = 0..8).
#[inline(always)]
pub fn unpack_scales_mins_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    (sc, m)
}

impl BlockQ4K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl BlockQ5K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f32 {
        f16_le(self.dmin)
    }
}
impl BlockQ6K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f16_le(self.d)
    }
}
impl BlockQ8K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    #[inline(always)]
    pub fn bsum(&self, g: usize) -> i16 {
        i16::from_le_bytes([self.bsums[2 * g], self.bsums[2 * g + 1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_checks_length_and_ignores_alignment() {
        let bytes = vec![0u8; 3 * 144 + 1];
        assert!(cast_blocks::<BlockQ4K>(&bytes[..3 * 144]).is_ok());
        assert!(cast_blocks::<BlockQ4K>(&bytes[1..]).is_ok());
        assert!(cast_blocks::<BlockQ4K>(&bytes).is_err());
        assert_eq!(cast_blocks::<BlockQ4K>(&bytes[1..]).unwrap().len(), 3);
    }

    #[test]
    fn k4_scale_unpacking_matches_bitwise_definition() {
        // Scales s_j and mins m_j chosen so every bit position is exercised.
        let sc = [1u8, 62, 33, 17, 63, 0, 45, 22];
        let mn = [5u8, 60, 31, 8, 40, 63, 2, 51];
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
        }
        assert_eq!(unpack_scales_mins_k4(&s), (sc, mn));
    }

    #[test]
    fn q3k_scale_unpacking_matches_bitwise_definition() {
        let want: [u8; 16] = [0, 63, 32, 1, 17, 45, 2, 60, 31, 33, 7, 48, 12, 55, 21, 40];
        let mut b = BlockQ3K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: [0; 12],
            d: [0; 2],
        };
        for (j, &v) in want.iter().enumerate() {
            // Low 4 bits: bytes 0..8 (j < 8 low nibble, j >= 8 high nibble of byte j-8).
            if j < 8 {
                b.scales[j] |= v & 15;
            } else {
                b.scales[j - 8] |= (v & 15) << 4;
            }
            // High 2 bits: byte 8 + j % 4, bit pair j / 4.
            b.scales[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
        }
        assert_eq!(b.unpacked_scales(), want);
    }
}
