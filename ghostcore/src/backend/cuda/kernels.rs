//! The embedded kernel module and the names of its entry points.
//!
//! `build.rs` compiles `kernels/*.cu` into one fatbin (SASS for sm_80/86/89/90/120 and
//! compute_80 PTX). Each name below is an `extern "C" __global__` function in that module;
//! the argument lists are documented next to each kernel in its `.cu` file and mirrored by
//! the launch code in [`super::ops`].

use crate::quant::GgmlType;

/// The fatbin produced by `build.rs`.
pub(crate) static FATBIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ghostcore_kernels.fatbin"));

/// Every entry point, loaded (and so checked to exist) when the backend starts.
pub(crate) const ALL_KERNELS: &[&str] = &[
    "gc_quantize_q8_1",
    "gc_matvec_q4_0",
    "gc_matvec_q4_1",
    "gc_matvec_q5_0",
    "gc_matvec_q8_0",
    "gc_matvec_q4_k",
    "gc_matvec_q6_k",
    "gc_matmul_q4_0",
    "gc_matmul_q4_1",
    "gc_matmul_q5_0",
    "gc_matmul_q8_0",
    "gc_matmul_q4_k",
    "gc_matmul_q6_k",
    "gc_matvec_f32x_q4_0",
    "gc_matvec_f32x_q4_1",
    "gc_matvec_f32x_q5_0",
    "gc_matvec_f32x_q8_0",
    "gc_matvec_f32x_q4_k",
    "gc_matvec_f32x_q6_k",
    "gc_matvec_f32x_f16",
    "gc_matvec_f32x_f32",
    "gc_rms_norm",
    "gc_rms_norm_q8_1",
    "gc_rope",
    "gc_kv_store",
    "gc_attn_partial",
    "gc_attn_combine",
    "gc_gated_act",
    "gc_add_inplace",
    "gc_embed_f32",
    "gc_embed_f16",
    "gc_embed_q4_0",
    "gc_embed_q4_1",
    "gc_embed_q5_0",
    "gc_embed_q8_0",
    "gc_embed_q4_k",
    "gc_embed_q6_k",
    "gc_ffn_gate_up_q4_0",
    "gc_ffn_gate_up_q4_1",
    "gc_ffn_gate_up_q5_0",
    "gc_ffn_gate_up_q8_0",
    "gc_ffn_gate_up_q4_k",
    "gc_ffn_gate_up_q6_k",
    "gc_sparse_down_q8_0",
    "gc_sparse_down_q4_0",
];

/// Weight types the device kernels handle.
pub const SUPPORTED_WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// The kernel-name suffix of a supported weight type.
pub(crate) fn type_suffix(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q6_K => "q6_k",
        _ => return None,
    })
}

/// Whether the type has an integer (Q8_1 activation) kernel; F16/F32 read f32 activations.
pub(crate) fn has_q8_1_kernel(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16) && type_suffix(ty).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_has_its_kernels_listed() {
        for &ty in SUPPORTED_WEIGHT_TYPES {
            let s = type_suffix(ty).unwrap();
            assert!(ALL_KERNELS.contains(&format!("gc_embed_{s}").as_str()));
            assert!(ALL_KERNELS.contains(&format!("gc_matvec_f32x_{s}").as_str()));
            if has_q8_1_kernel(ty) {
                for k in ["gc_matvec", "gc_matmul", "gc_ffn_gate_up"] {
                    assert!(
                        ALL_KERNELS.contains(&format!("{k}_{s}").as_str()),
                        "{k}_{s}"
                    );
                }
            }
        }
    }

    /// Every listed name is a symbol of the embedded fatbin (names appear in the ELF string
    /// tables of the SASS images and in the PTX text).
    #[test]
    fn every_kernel_name_is_in_the_fatbin() {
        for name in ALL_KERNELS {
            let found = FATBIN
                .windows(name.len() + 1)
                .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
            assert!(found, "{name} not found in the fatbin");
        }
    }
}
