//! Sidecar round trip, corruption and model-mismatch handling.

use ghostcore::gguf::{GgufFile, GgufWriter};
use ghostcore::quant::GgmlType;
use ghostcore::sparsity::{
    model_checksum, BudgetEntry, CalibrationStats, DownCopy, Score, Sidecar, TARGETS,
};
use ghostcore::Error;

const N_LAYER: usize = 2;
const N_EMBD: usize = 8;
const N_FF: usize = 16;

fn f32_bytes(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(|x| x.to_le_bytes()).collect()
}

/// A tiny llama-shaped model file holding only FFN tensors (all the checksum reads).
fn tiny_model(seed: f32) -> std::sync::Arc<GgufFile> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    for i in 0..N_LAYER {
        for (k, dims) in [
            ("ffn_gate", [N_EMBD as u64, N_FF as u64]),
            ("ffn_up", [N_EMBD as u64, N_FF as u64]),
            ("ffn_down", [N_FF as u64, N_EMBD as u64]),
        ] {
            let data = f32_bytes((0..N_EMBD * N_FF).map(|j| seed + j as f32 * 0.01 + i as f32));
            w.add_tensor(format!("blk.{i}.{k}.weight"), GgmlType::F32, &dims, data)
                .unwrap();
        }
    }
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn calibrated(model: &GgufFile) -> Sidecar {
    let mut stats = CalibrationStats::new(N_LAYER, N_EMBD, N_FF, 0.01);
    stats.sample_stride = 1;
    for t in 0..50 {
        for l in 0..N_LAYER {
            let x: Vec<f32> = (0..N_EMBD)
                .map(|i| ((t * 7 + i) % 5) as f32 - 2.0)
                .collect();
            // Neuron 3 never fires in layer 1.
            let a: Vec<f32> = (0..N_FF)
                .map(|j| {
                    if l == 1 && j == 3 {
                        0.0
                    } else {
                        ((t * 13 + j * 3) % 17) as f32 / 17.0 - 0.3
                    }
                })
                .collect();
            let u: Vec<f32> = (0..N_FF).map(|j| ((t + j) % 7) as f32 - 3.0).collect();
            stats.observe(l, &x, &a, &u);
        }
    }
    let mut s = Sidecar::from_stats(model, &stats, "synthetic").unwrap();
    s.budget.push(BudgetEntry {
        max_ppl_increase_pct: 2.0,
        mode: "cascade:0.2:0.4".into(),
        measured_ppl_increase_pct: 1.7,
        bytes_skipped: 0.27,
    });
    s.down_copies = Some(
        (0..N_LAYER)
            .map(|l| DownCopy {
                ty: GgmlType::F32,
                data: f32_bytes((0..N_FF * N_EMBD).map(|j| j as f32 - l as f32)),
            })
            .collect(),
    );
    s
}

#[test]
fn round_trip_preserves_everything() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    assert!(s.layers[1].dead[3]);
    assert_eq!(s.layers[1].n_dead(), 1);
    assert_eq!(s.targets, TARGETS.to_vec());
    let dir = std::env::temp_dir().join(format!("ghost-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.ghost");
    s.write_file(&path).unwrap();
    let back = Sidecar::load(&path, &model).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.budget_for(2.5).unwrap().mode, "cascade:0.2:0.4");
    assert!(back.budget_for(1.0).is_none());
    assert!(back.layers[0].thresholds(Score::Act).len() == TARGETS.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mismatched_model_is_refused() {
    let model = tiny_model(0.0);
    let other = tiny_model(0.5);
    assert_ne!(model_checksum(&model), model_checksum(&other));
    let s = calibrated(&model);
    let file = GgufFile::from_bytes(s.to_bytes().unwrap()).unwrap();
    let parsed = Sidecar::from_gguf(&file).unwrap();
    assert!(parsed.check_model(&model).is_ok());
    match parsed.check_model(&other) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("another model"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn corrupted_sidecars_are_typed_errors() {
    let model = tiny_model(0.0);
    let s = calibrated(&model);
    let good = s.to_bytes().unwrap();

    // Truncated file: the GGUF reader's error.
    let cut = good[..good.len() / 2].to_vec();
    match GgufFile::from_bytes(cut) {
        Err(e) => assert!(matches!(Error::from(e), Error::Gguf(_))),
        Ok(_) => panic!("a truncated sidecar was accepted"),
    }

    // A model file is not a sidecar.
    let not_sidecar = tiny_model(0.0);
    assert!(matches!(
        Sidecar::from_gguf(&not_sidecar),
        Err(Error::Format(_))
    ));

    // Semantic corruption: a dead mask holding 7, a non-permutation hot order, NaN stats.
    let mutate = |f: &dyn Fn(&mut Sidecar)| {
        let mut bad = s.clone();
        f(&mut bad);
        let file = GgufFile::from_bytes(bad.to_bytes().unwrap()).unwrap();
        Sidecar::from_gguf(&file)
    };
    let r = mutate(&|b| b.layers[0].hot_order[0] = b.layers[0].hot_order[1]);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");
    let r = mutate(&|b| b.layers[1].mean_abs_up[2] = f32::NAN);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");
    let r = mutate(&|b| b.layers[0].thr_act[0] = -1.0);
    assert!(matches!(r, Err(Error::Format(_))), "{r:?}");

    // Byte-level: flip the dead-mask byte of layer 0 neuron 0 to 7 by rewriting the tensor.
    let file = GgufFile::from_bytes(good.clone()).unwrap();
    let mut w = GgufWriter::from_file(&file);
    for t in w.tensors_mut().iter_mut() {
        if t.name == "blk.0.sparsity.dead" {
            let mut d = t.data.to_vec();
            d[0] = 7;
            t.data = d.into();
        }
    }
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(matches!(Sidecar::from_gguf(&file), Err(Error::Format(_))));

    // Wrong version.
    let file = GgufFile::from_bytes(good).unwrap();
    let mut w = GgufWriter::from_file(&file);
    w.set_u32("ghost.sidecar.version", 99);
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(matches!(Sidecar::from_gguf(&file), Err(Error::Format(_))));
}

/// Real models: each model's checksum differs, and a sidecar made for one is refused by the
/// other.
#[test]
fn real_models_have_distinct_checksums() {
    let (Some(a), Some(b)) = (
        ghostcore::test_models::find_model(ghostcore::test_models::SMOLLM2_Q4_K_M),
        ghostcore::test_models::find_model(ghostcore::test_models::SMOLLM2_Q4_1),
    ) else {
        return;
    };
    let (a, b) = (GgufFile::open(a).unwrap(), GgufFile::open(b).unwrap());
    assert_ne!(model_checksum(&a), model_checksum(&b));
    assert_eq!(model_checksum(&a), model_checksum(&a));
}
