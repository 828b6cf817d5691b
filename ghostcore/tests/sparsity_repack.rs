//! The neuron-major copy of `ffn_down`: structure (an F32 copy is the exact transpose of the
//! dequantized original) and the requantization error of each copy type on a real model.

use ghostcore::gguf::GgufFile;
use ghostcore::quant::GgmlType;
use ghostcore::sparsity::repack::{default_copy_type, neuron_major_down};
use ghostcore::sparsity::QMatrix;
use ghostcore::test_models::{find_model, SMOLLM2_Q4_K_M};

#[test]
fn f32_copy_is_the_exact_transpose_and_quantized_copies_are_close() {
    let Some(path) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let (info, data) = file.tensor("blk.0.ffn_down.weight").unwrap();
    let (n_ff, n_embd) = (info.dims[0] as usize, info.dims[1] as usize);
    let down = QMatrix::new(info.ty, n_embd, n_ff, data).unwrap();

    // Original, dequantized row by row (output-major).
    let mut orig = vec![0f32; n_embd * n_ff];
    for (r, row) in orig.chunks_exact_mut(n_ff).enumerate() {
        down.dequantize_row(r, row).unwrap();
    }

    let (copy, err) = neuron_major_down(&down, GgmlType::F32).unwrap();
    assert_eq!(err.max_abs, 0.0);
    let t = QMatrix::new(GgmlType::F32, n_ff, n_embd, &copy).unwrap();
    let mut row = vec![0f32; n_embd];
    for j in [0usize, 1, 255, 256, n_ff - 1] {
        t.dequantize_row(j, &mut row).unwrap();
        for o in 0..n_embd {
            assert_eq!(row[o], orig[o * n_ff + j], "neuron {j} output {o}");
        }
    }

    // Requantized copies: error grows as bits shrink, and stays within each type's usual range.
    let mut last = 0.0;
    for (ty, bound) in [
        (GgmlType::F16, 1e-3),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q5_0, 0.08),
        (GgmlType::Q4_0, 0.15),
    ] {
        let (_, e) = neuron_major_down(&down, ty).unwrap();
        eprintln!(
            "blk.0.ffn_down {} -> neuron-major {ty}: rel RMSE {:.4}, max |err| {:.4}",
            info.ty, e.rel_rmse, e.max_abs
        );
        assert!(e.rel_rmse < bound, "{ty}: {}", e.rel_rmse);
        assert!(e.rel_rmse >= last, "{ty} should not beat a wider type");
        last = e.rel_rmse;
    }
    // SmolLM2's n_embd = 576 is not a multiple of 256: no Q4_K copy.
    assert!(neuron_major_down(&down, GgmlType::Q4_K).is_err());
    assert_eq!(default_copy_type(info.ty, n_embd), GgmlType::Q8_0);
}

/// The exact copies of a real Q4_K `ffn_down` (blk.3 of SmolLM2 Q4_K_M) and a real Q6_K
/// one (blk.0): one neuron with coefficient ±1 gives that neuron's column of the dequantized
/// original, to f16 rounding of the sub-block scales for Q4_K (the i8 coefficient is exactly
/// ±127/127) and to float rounding for Q6_K (its scales are kept as they are). The Q6_K copy
/// has exactly the original's bytes; a type without an exact copy is refused with a typed
/// error.
#[test]
fn exact_copies_reproduce_original_columns() {
    use ghostcore::sparsity::exact_down::{ExactDown, ExactDownScratch};
    let Some(path) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    for (tensor, ty, tol, max_ratio) in [
        ("blk.3.ffn_down.weight", GgmlType::Q4_K, 2e-3f32, 1.25),
        ("blk.0.ffn_down.weight", GgmlType::Q6_K, 1e-5, 1.0),
    ] {
        let (info, data) = file.tensor(tensor).unwrap();
        assert_eq!(info.ty, ty);
        let (n_ff, n_embd) = (info.dims[0] as usize, info.dims[1] as usize);
        let down = QMatrix::new(info.ty, n_embd, n_ff, data).unwrap();
        let mut orig = vec![0f32; n_embd * n_ff];
        for (r, row) in orig.chunks_exact_mut(n_ff).enumerate() {
            down.dequantize_row(r, row).unwrap();
        }
        let copy = ExactDown::from_down(info.ty, n_embd, n_ff, data).unwrap();
        assert_eq!(copy.source_type(), ty);
        // Q4_K: about 1.1x the original's bytes (a Q8_0 copy is 1.9x); Q6_K: the same.
        let ratio = copy.total_bytes() as f64 / data.len() as f64;
        assert!(ratio <= max_ratio, "{ty}: {ratio}");
        let max_w = orig.iter().fold(0f32, |m, w| m.max(w.abs()));
        let mut out = vec![0f32; n_embd];
        let mut scratch = ExactDownScratch::default();
        for j in [0u32, 15, 16, 31, 32, 255, 256, 1000, n_ff as u32 - 1] {
            for coef in [1.0f32, -1.0] {
                out.fill(0.0);
                copy.accumulate(&[j], &[coef], &mut out, &mut scratch)
                    .unwrap();
                for o in 0..n_embd {
                    let want = coef * orig[o * n_ff + j as usize];
                    assert!(
                        (out[o] - want).abs() <= tol * max_w,
                        "{ty} neuron {j} output {o}: {} vs {want}",
                        out[o]
                    );
                }
            }
        }
    }
    let (gate, data) = file.tensor("blk.0.ffn_gate.weight").unwrap();
    assert_eq!(gate.ty, GgmlType::Q5_0);
    let (n_embd, n_ff) = (gate.dims[0] as usize, gate.dims[1] as usize);
    assert!(matches!(
        ExactDown::from_down(gate.ty, n_embd, n_ff, data),
        Err(ghostcore::Error::Unsupported(_))
    ));
}
