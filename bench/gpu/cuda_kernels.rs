//! GPU kernel benchmark (needs a CUDA device; prints why and exits 0 without one).
//!
//! Times, per call:
//! - decode matvec for each weight type at model shapes, integer (Q8_1 + dp4a) path against
//!   the dequantizing (f32 activation) path, with effective weight bandwidth (back-to-back
//!   launches on one copy), and at Llama-3-8B shapes from HBM (graph over rotating copies);
//! - the sparse FFN (fused gate/up, deterministic neuron-major down) at several sparsities
//!   against the dense decode FFN, with its byte bound (graph over rotating layer copies);
//! - split-K decode attention at several context lengths.
//!
//! Output: a table on stdout; with `GHOSTCORE_BENCH_OUT=<file>`, one JSON object per line.
//! Run: `cargo bench -p ghostcore --features cuda --bench cuda_kernels` (or the staged binary).

use std::io::Write;
use std::time::Instant;

use ghostcore::backend::cuda::{
    AttentionWorkspace, CudaBackend, DeviceActivations, DeviceMatrix, DeviceVec, GatedActivation,
    KvCache, KvCacheShape, NeuronMajorDown, SparseFfnRule, SparseFfnScratch,
};
use ghostcore::quant::GgmlType;
use ghostcore::Result;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random rows of `ty` with finite, small scales (random quants everywhere else).
fn random_rows(rng: &mut Rng, ty: GgmlType, n_rows: usize, n_cols: usize) -> Vec<u8> {
    let n_blocks = n_rows * n_cols / ty.block_size();
    let bs = ty.type_size();
    let mut out: Vec<u8> = (0..n_blocks * bs).map(|_| rng.next() as u8).collect();
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    for b in out.chunks_exact_mut(bs) {
        match ty {
            GgmlType::F16 => b.copy_from_slice(&f16(0.05 * rng.unit())),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                b[..2].copy_from_slice(&f16(0.01 * rng.unit()))
            }
            GgmlType::Q4_1 => {
                b[..2].copy_from_slice(&f16(0.01 * rng.unit()));
                b[2..4].copy_from_slice(&f16(0.01 * rng.unit()));
            }
            GgmlType::Q4_K => {
                b[..2].copy_from_slice(&f16(0.001 * rng.unit().abs()));
                b[2..4].copy_from_slice(&f16(0.001 * rng.unit().abs()));
            }
            GgmlType::Q6_K => b[208..210].copy_from_slice(&f16(0.001 * rng.unit())),
            _ => {}
        }
    }
    out
}

struct Report {
    json: Option<std::fs::File>,
}

impl Report {
    fn emit(&mut self, json: String) {
        if let Some(f) = self.json.as_mut() {
            let _ = writeln!(f, "{json}");
        }
    }
}

/// Seconds per call of `f`, over `iters` calls queued back to back.
fn time_per_call(
    gpu: &CudaBackend,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    // GHOSTCORE_BENCH_ITERS overrides the repetitions (e.g. 1 under a profiler).
    let iters = std::env::var("GHOSTCORE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(iters);
    for _ in 0..10.min(iters) {
        f()?;
    }
    gpu.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    gpu.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

/// The prefill matmul (`gc_matmul_*`, a batch of tokens per launch) against one matvec per
/// token, at Llama-3-8B shapes: time per token and integer-op rate.
fn bench_matmul(gpu: &CudaBackend, rng: &mut Rng, rep: &mut Report) -> Result<()> {
    let shapes: &[(&str, usize, usize, GgmlType)] = &[
        ("8b attn_q", 4096, 4096, GgmlType::Q4_K),
        ("8b ffn_up", 14336, 4096, GgmlType::Q4_K),
        ("8b ffn_down", 4096, 14336, GgmlType::Q6_K),
        ("8b ffn_down q4_K", 4096, 14336, GgmlType::Q4_K),
    ];
    println!("\n== prefill matmul (us per token; TOPS = 2*rows*cols per token) ==");
    println!(
        "{:<20} {:>6} {:>6} {:>12} {:>8} {:>10}",
        "shape", "type", "n_tok", "us/token", "TOPS", "x matvec"
    );
    for &(label, rows, cols, ty) in shapes {
        let w = random_rows(rng, ty, rows, cols);
        let m = DeviceMatrix::upload(gpu, ty, cols, rows, &w)?;
        let max_tok = 64;
        let mut act = DeviceActivations::new(gpu, max_tok * cols)?;
        let x: Vec<f32> = (0..max_tok * cols).map(|_| rng.unit()).collect();
        act.x.write(gpu, &x)?;
        gpu.quantize_activations(&mut act)?;
        let mut out = DeviceVec::zeros(gpu, max_tok * rows)?;
        let mut single = DeviceVec::zeros(gpu, rows)?;
        let mut one = DeviceActivations::new(gpu, cols)?;
        one.x.write(gpu, &x[..cols])?;
        gpu.quantize_activations(&mut one)?;
        let t_matvec = time_per_call(gpu, 100, || gpu.matvec(&m, &one, &mut single, false))?;
        for n_tok in [8usize, 16, 64] {
            let t = time_per_call(gpu, 20, || gpu.matmul(&m, &act, n_tok, &mut out, false))?;
            let per_tok = t / n_tok as f64;
            let tops = 2.0 * rows as f64 * cols as f64 / per_tok / 1e12;
            println!(
                "{:<20} {:>6} {:>6} {:>12.2} {:>8.1} {:>10.2}",
                label,
                ty.name(),
                n_tok,
                per_tok * 1e6,
                tops,
                t_matvec / per_tok
            );
            rep.emit(format!(
                "{{\"bench\":\"matmul\",\"shape\":\"{label}\",\"rows\":{rows},\"cols\":{cols},\"type\":\"{}\",\"n_tok\":{n_tok},\"us_per_token\":{:.3},\"matvec_us\":{:.3}}}",
                ty.name(),
                per_tok * 1e6,
                t_matvec * 1e6
            ));
        }
    }
    Ok(())
}

fn bench_matvec(gpu: &CudaBackend, rng: &mut Rng, rep: &mut Report) -> Result<()> {
    let shapes: &[(&str, usize, usize)] = &[
        ("smollm2-135m ffn_up", 1536, 576),
        ("smollm2-135m ffn_down", 576, 1536),
        ("gemma3-270m ffn_up", 2048, 640),
        ("7b attn_q", 4096, 4096),
        ("7b ffn_up", 11008, 4096),
        ("7b ffn_down", 4096, 11008),
    ];
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    println!("\n== decode matvec (us per call; GB/s of weights) ==");
    println!(
        "{:<24} {:>6} {:>12} {:>10} {:>12} {:>10}",
        "shape", "type", "q8_1 dp4a", "GB/s", "dequant f32", "GB/s"
    );
    for &(label, rows, cols) in shapes {
        for ty in types {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let w = random_rows(rng, ty, rows, cols);
            let m = DeviceMatrix::upload(gpu, ty, cols, rows, &w)?;
            let mut act = DeviceActivations::new(gpu, cols)?;
            let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
            act.x.write(gpu, &x)?;
            gpu.quantize_activations(&mut act)?;
            let mut out = DeviceVec::zeros(gpu, rows)?;
            let iters = 200;
            let integer = if matches!(ty, GgmlType::F16) {
                None
            } else {
                Some(time_per_call(gpu, iters, || {
                    gpu.matvec(&m, &act, &mut out, false)
                })?)
            };
            let deq = time_per_call(gpu, iters, || {
                gpu.matvec_dequant(&m, &act.x, &mut out, false)
            })?;
            let gbs = |t: f64| m.size_bytes() as f64 / t / 1e9;
            let fmt = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.2}", t * 1e6));
            let fmt_bw = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.0}", gbs(t)));
            println!(
                "{:<24} {:>6} {:>12} {:>10} {:>12} {:>10}",
                label,
                ty.name(),
                fmt(integer),
                fmt_bw(integer),
                fmt(Some(deq)),
                fmt_bw(Some(deq))
            );
            rep.emit(format!(
                "{{\"bench\":\"matvec\",\"shape\":\"{label}\",\"rows\":{rows},\"cols\":{cols},\"type\":\"{}\",\"q8_1_us\":{},\"dequant_us\":{:.3},\"weight_bytes\":{}}}",
                ty.name(),
                integer.map_or("null".to_string(), |t| format!("{:.3}", t * 1e6)),
                deq * 1e6,
                m.size_bytes()
            ));
        }
    }
    Ok(())
}

/// Seconds per call of `f(i)`, `i` cycling over `0..n_copies`, with `per_graph` calls recorded
/// once as a CUDA graph and the graph replayed: the launch cost of a decode step's graph, not
/// the host's, and (with copies whose total exceeds the L2 cache) weights read from HBM.
fn time_graph(
    gpu: &CudaBackend,
    per_graph: usize,
    n_copies: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let graph = gpu.capture_graph(|| {
        for i in 0..per_graph {
            f(i % n_copies)?;
        }
        Ok(())
    })?;
    let reps = std::env::var("GHOSTCORE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize);
    for _ in 0..3.min(reps) {
        gpu.launch_graph(&graph)?;
    }
    gpu.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps {
        gpu.launch_graph(&graph)?;
    }
    gpu.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / (reps * per_graph) as f64)
}

/// Copies of a weight set so that one pass over them exceeds the L2 cache several times.
fn copies_for(bytes_per_copy: usize) -> usize {
    (400usize << 20)
        .div_ceil(bytes_per_copy.max(1))
        .clamp(2, 64)
}

/// Decode matvec at Llama-3-8B shapes as a fraction of HBM bandwidth: each call reads a
/// different copy of the matrix (the copies together exceed the L2 several times over), and
/// the calls run from a recorded graph, as in a decode step.
fn bench_matvec_hbm(gpu: &CudaBackend, rng: &mut Rng, rep: &mut Report) -> Result<()> {
    let shapes: &[(&str, usize, usize)] = &[
        ("8b attn_q", 4096, 4096),
        ("8b attn_k", 1024, 4096),
        ("8b ffn_up", 14336, 4096),
        ("8b ffn_down", 4096, 14336),
    ];
    println!("\n== decode matvec from HBM (graph of 64 calls over rotating copies; 8B shapes) ==");
    println!(
        "{:<14} {:>6} {:>8} {:>10} {:>10}",
        "shape", "type", "copies", "us/call", "GB/s"
    );
    for &(label, rows, cols) in shapes {
        for ty in [
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
        ] {
            let w = random_rows(rng, ty, rows, cols);
            let n = copies_for(w.len());
            let ms = (0..n)
                .map(|_| DeviceMatrix::upload(gpu, ty, cols, rows, &w))
                .collect::<Result<Vec<_>>>()?;
            let mut act = DeviceActivations::new(gpu, cols)?;
            let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
            act.x.write(gpu, &x)?;
            gpu.quantize_activations(&mut act)?;
            let mut out = DeviceVec::zeros(gpu, rows)?;
            let t = time_graph(gpu, 64, n, |i| gpu.matvec(&ms[i], &act, &mut out, false))?;
            let gbs = w.len() as f64 / t / 1e9;
            println!(
                "{label:<14} {:>6} {n:>8} {:>10.2} {gbs:>10.0}",
                ty.name(),
                t * 1e6
            );
            rep.emit(format!(
                "{{\"bench\":\"matvec_hbm\",\"shape\":\"{label}\",\"rows\":{rows},\"cols\":{cols},\"type\":\"{}\",\"copies\":{n},\"us\":{:.3},\"gb_s\":{gbs:.1}}}",
                ty.name(),
                t * 1e6
            ));
        }
    }
    Ok(())
}

/// The sparse FFN against the dense one at several sparsities, per token-layer, over rotating
/// layer copies from a recorded graph (weights from HBM, as in a decode step). The byte bound
/// is dense bytes / sparse bytes (gate dense, up and the neuron-major down for the neurons
/// read); "of bound" is the measured speed-up as a share of it.
fn bench_sparse_ffn(gpu: &CudaBackend, rng: &mut Rng, rep: &mut Report) -> Result<()> {
    println!("\n== FFN, dense vs sparse (us per token-layer, graph over rotating layer copies) ==");
    for &(label, n_embd, n_ff, ty) in [
        ("smollm2-135m", 576usize, 1536usize, GgmlType::Q8_0),
        ("7b q4_K", 4096, 11008, GgmlType::Q4_K),
        ("8b q4_K", 4096, 14336, GgmlType::Q4_K),
    ]
    .iter()
    .filter(|s| {
        // GHOSTCORE_BENCH_SHAPE=8b keeps the shapes whose label contains "8b".
        std::env::var("GHOSTCORE_BENCH_SHAPE").map_or(true, |f| s.0.contains(f.as_str()))
    }) {
        let down_ty = if n_ff % 256 == 0 { ty } else { GgmlType::Q8_0 };
        let gate_w = random_rows(rng, ty, n_ff, n_embd);
        let up_w = random_rows(rng, ty, n_ff, n_embd);
        let down_w = random_rows(rng, down_ty, n_embd, n_ff);
        let nm8_w = random_rows(rng, GgmlType::Q8_0, n_ff, n_embd);
        let nm4_w = random_rows(rng, GgmlType::Q4_0, n_ff, n_embd);
        let layer_bytes = gate_w.len() + up_w.len() + down_w.len();
        let n = copies_for(layer_bytes);
        struct Layer {
            gate: DeviceMatrix,
            up: DeviceMatrix,
            down: DeviceMatrix,
            nm8: NeuronMajorDown,
            nm4: NeuronMajorDown,
        }
        let layers = (0..n)
            .map(|_| {
                Ok(Layer {
                    gate: DeviceMatrix::upload(gpu, ty, n_embd, n_ff, &gate_w)?,
                    up: DeviceMatrix::upload(gpu, ty, n_embd, n_ff, &up_w)?,
                    down: DeviceMatrix::upload(gpu, down_ty, n_ff, n_embd, &down_w)?,
                    nm8: NeuronMajorDown::upload(gpu, n_ff, n_embd, &nm8_w)?,
                    nm4: NeuronMajorDown::upload_typed(gpu, GgmlType::Q4_0, n_ff, n_embd, &nm4_w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut x = DeviceActivations::new(gpu, n_embd)?;
        let xv: Vec<f32> = (0..n_embd).map(|_| rng.unit()).collect();
        x.x.write(gpu, &xv)?;
        gpu.quantize_activations(&mut x)?;
        let mut g = DeviceVec::zeros(gpu, n_ff)?;
        let mut u = DeviceVec::zeros(gpu, n_ff)?;
        let mut h = DeviceActivations::new(gpu, n_ff)?;
        let mut out = DeviceVec::zeros(gpu, n_embd)?;

        let unfused = time_graph(gpu, 32, n, |i| {
            let l = &layers[i];
            gpu.matvec(&l.gate, &x, &mut g, false)?;
            gpu.matvec(&l.up, &x, &mut u, false)?;
            gpu.gated_activation(&mut g, &u, GatedActivation::Silu)?;
            // down reads the activated hidden vector as Q8_1
            std::mem::swap(&mut h.x, &mut g);
            gpu.quantize_activations(&mut h)?;
            std::mem::swap(&mut h.x, &mut g);
            gpu.matvec(&l.down, &h, &mut out, true)
        })?;
        // The forward pass's dense decode FFN: gate, up and activation fused, then down.
        let dense = time_graph(gpu, 32, n, |i| {
            let l = &layers[i];
            gpu.ffn_gate_up(&l.gate, &l.up, &x, GatedActivation::Silu, &mut h.x)?;
            gpu.quantize_activations(&mut h)?;
            gpu.matvec(&l.down, &h, &mut out, true)
        })?;
        let gate_dense = time_graph(gpu, 32, n, |i| {
            gpu.matvec(&layers[i].gate, &x, &mut g, false)
        })?;
        println!(
            "{label:<14} dense {:>8.2} us ({:.0} GB/s; {n} layer copies; gate+up fused; unfused {:.2} us); gate matvec alone {:.2} us",
            dense * 1e6,
            layer_bytes as f64 / dense / 1e9,
            unfused * 1e6,
            gate_dense * 1e6
        );
        rep.emit(format!(
            "{{\"bench\":\"ffn_dense\",\"model\":\"{label}\",\"type\":\"{}\",\"us\":{:.3},\"unfused_us\":{:.3},\"gate_us\":{:.3},\"bytes\":{layer_bytes}}}",
            ty.name(),
            dense * 1e6,
            unfused * 1e6,
            gate_dense * 1e6
        ));

        // Thresholds for target sparsities from the actual |SiLU(gate)| distribution.
        gpu.matvec(&layers[0].gate, &x, &mut g, false)?;
        let mut mags: Vec<f32> = g
            .to_vec(gpu)?
            .iter()
            .map(|&v| (v / (1.0 + (-v).exp())).abs())
            .collect();
        mags.sort_by(|a, b| a.total_cmp(b));
        let mut scratch = SparseFfnScratch::new(gpu, n_ff, n_embd)?;
        let up_row = up_w.len() / n_ff;
        for sparsity in [0.0f64, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0] {
            let threshold = if sparsity == 0.0 {
                -1.0
            } else if sparsity >= 1.0 {
                f32::INFINITY
            } else {
                mags[((n_ff as f64 * sparsity) as usize).min(n_ff - 1)]
            };
            let rule = SparseFfnRule::act(threshold);
            let mut run = |q4: bool| {
                time_graph(gpu, 32, n, |i| {
                    let l = &layers[i];
                    let down = if q4 { &l.nm4 } else { &l.nm8 };
                    gpu.sparse_ffn(
                        &l.gate,
                        &l.up,
                        down,
                        &x,
                        GatedActivation::Silu,
                        &rule,
                        &mut scratch,
                        &mut out,
                        true,
                    )
                })
            };
            let t8 = run(false)?;
            let t4 = run(true)?;
            // The two halves alone (down over the hidden vector the last run left).
            let t_gate_up = time_graph(gpu, 32, n, |i| {
                let l = &layers[i];
                gpu.sparse_gate_up(
                    &l.gate,
                    &l.up,
                    &x,
                    GatedActivation::Silu,
                    &rule,
                    &mut scratch,
                )
            })?;
            let t_down = time_graph(gpu, 32, n, |i| {
                gpu.sparse_down(&layers[i].nm4, &mut scratch, &mut out, true)
            })?;
            let active = scratch.read_active(gpu)?.len();
            let sparse_bytes = |nm_row: usize| gate_w.len() + active * (up_row + nm_row);
            let bound4 = layer_bytes as f64 / sparse_bytes(nm4_w.len() / n_ff) as f64;
            let bound8 = layer_bytes as f64 / sparse_bytes(nm8_w.len() / n_ff) as f64;
            println!(
                "{label:<14} sparse {:>4.0}% ({active:>5} active)  down q4_0 {:>8.2} us ({:.2}x dense, bound {:.2}x, {:.0}% of bound; gate+up {:.2}, down {:.2})  down q8_0 {:>8.2} us ({:.2}x, bound {:.2}x, {:.0}%)",
                sparsity * 100.0,
                t4 * 1e6,
                dense / t4,
                bound4,
                100.0 * dense / t4 / bound4,
                t_gate_up * 1e6,
                t_down * 1e6,
                t8 * 1e6,
                dense / t8,
                bound8,
                100.0 * dense / t8 / bound8
            );
            rep.emit(format!(
                "{{\"bench\":\"ffn_sparse\",\"model\":\"{label}\",\"type\":\"{}\",\"target_sparsity\":{sparsity},\"active\":{active},\"n_ff\":{n_ff},\"us_down_q8_0\":{:.3},\"us_down_q4_0\":{:.3},\"dense_us\":{:.3},\"bound_q4_0\":{bound4:.3},\"bound_q8_0\":{bound8:.3},\"gate_up_us\":{:.3},\"down_q4_0_us\":{:.3}}}",
                ty.name(),
                t8 * 1e6,
                t4 * 1e6,
                dense * 1e6,
                t_gate_up * 1e6,
                t_down * 1e6
            ));
        }
    }
    Ok(())
}

fn bench_attention(gpu: &CudaBackend, rng: &mut Rng, rep: &mut Report) -> Result<()> {
    println!("\n== decode attention (us per layer) ==");
    for &(label, n_heads, n_kv, hd) in &[
        ("smollm2-135m", 9usize, 3usize, 64usize),
        ("7b", 32, 32, 128),
        ("gqa 32/8", 32, 8, 128),
    ] {
        let max_ctx = 8192;
        let mut cache = KvCache::new(
            gpu,
            KvCacheShape {
                n_layers: 1,
                n_kv_heads: n_kv,
                head_dim: hd,
                max_ctx,
            },
        )?;
        let mut kv = DeviceVec::zeros(gpu, n_kv * hd)?;
        let vals: Vec<f32> = (0..n_kv * hd).map(|_| rng.unit()).collect();
        kv.write(gpu, &vals)?;
        for pos in 0..max_ctx {
            gpu.kv_store(&mut cache, 0, pos, &kv, &kv)?;
        }
        let q = DeviceVec::from_host(
            gpu,
            &(0..n_heads * hd).map(|_| rng.unit()).collect::<Vec<_>>(),
        )?;
        let mut ws = AttentionWorkspace::new(gpu, n_heads, hd, max_ctx)?;
        let mut out = DeviceVec::zeros(gpu, n_heads * hd)?;
        for ctx in [128usize, 1024, 4096, 8192] {
            let t = time_per_call(gpu, 100, || {
                gpu.attention(
                    &q,
                    &cache,
                    0,
                    0..ctx,
                    1.0 / (hd as f32).sqrt(),
                    None,
                    &mut ws,
                    &mut out,
                )
            })?;
            let kv_bytes = 2 * ctx * n_kv * hd * 2;
            println!(
                "{label:<14} ctx {ctx:>5} {:>9.2} us  {:>6.0} GB/s of KV",
                t * 1e6,
                kv_bytes as f64 / t / 1e9
            );
            rep.emit(format!(
                "{{\"bench\":\"attention\",\"model\":\"{label}\",\"n_heads\":{n_heads},\"n_kv_heads\":{n_kv},\"head_dim\":{hd},\"ctx\":{ctx},\"us\":{:.3}}}",
                t * 1e6
            ));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let Some(gpu) = CudaBackend::try_new()? else {
        println!("cuda_kernels bench: no CUDA device; nothing measured");
        return Ok(());
    };
    let info = gpu.info().clone();
    println!(
        "device {} (sm_{}{}, {} SMs, {:.1} GiB)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessor_count,
        info.total_memory_bytes as f64 / (1u64 << 30) as f64
    );
    let mut rep = Report {
        json: std::env::var_os("GHOSTCORE_BENCH_OUT")
            .map(std::fs::File::create)
            .transpose()?,
    };
    rep.emit(format!(
        "{{\"bench\":\"device\",\"name\":\"{}\",\"cc\":\"{}.{}\",\"sms\":{}}}",
        info.name, info.compute_capability.0, info.compute_capability.1, info.multiprocessor_count
    ));
    let mut rng = Rng(42);
    // GHOSTCORE_BENCH_ONLY=matvec,hbm,matmul,sparse,attention picks parts (default: all).
    let only = std::env::var("GHOSTCORE_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    if want("matvec") {
        bench_matvec(&gpu, &mut rng, &mut rep)?;
    }
    if want("hbm") {
        bench_matvec_hbm(&gpu, &mut rng, &mut rep)?;
    }
    if want("matmul") {
        bench_matmul(&gpu, &mut rng, &mut rep)?;
    }
    if want("sparse") {
        bench_sparse_ffn(&gpu, &mut rng, &mut rep)?;
    }
    if want("attention") {
        bench_attention(&gpu, &mut rng, &mut rep)?;
    }
    Ok(())
}
