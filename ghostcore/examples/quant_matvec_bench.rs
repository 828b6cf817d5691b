//! Micro benchmark: single-threaded matvec of a 4096 x 4096 weight matrix (Q4_K by default),
//! scalar kernels vs the best SIMD kernels of this CPU, reported as weight GB/s; then a
//! 64-row matmul (prefill shape) with the active kernels, reported as effective weight
//! GB/s per activation row (i.e. m * matrix bytes / time) and compared with 64 matvecs.
//!
//! `cargo run --release -p ghostcore --example quant_matvec_bench [TYPE] [ROWS] [COLS]`
//! (TYPE is a ggml type name such as q4_K, q6_K, q8_0, q5_0, f16). Times are the best
//! pass in thread CPU time, so other processes on shared cores disturb them less.

use std::time::{Duration, Instant};

/// CPU time of this thread: robust against other processes sharing the cores.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

use ghostcore::quant::{
    active_isa, best_supported_isa, matmul, matvec_with_isa, quantize_activations, vec_dot_type,
    GgmlType, Isa,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = args
        .get(1)
        .map(|s| GgmlType::from_name(s).unwrap_or_else(|| panic!("unknown type {s}")))
        .unwrap_or(GgmlType::Q4_K);
    let rows: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(4096);
    let cols: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(4096);
    let rb = ty
        .row_bytes(cols as u64)
        .expect("columns must be whole blocks") as usize;

    // Deterministic pseudo-random weights with small finite scales.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut w: Vec<u8> = (0..rows * rb).map(|_| next() as u8).collect();
    let f16_fields: &[usize] = match ty {
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q6_K => &[208],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        _ => &[],
    };
    let small = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    if matches!(ty, GgmlType::F16) {
        for c in w.chunks_exact_mut(2) {
            c.copy_from_slice(&small);
        }
    }
    for blk in w.chunks_exact_mut(ty.type_size()) {
        for &off in f16_fields {
            blk[off..off + 2].copy_from_slice(&small);
        }
    }
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let vdt = vec_dot_type(ty);
    let mut act = vec![0u8; vdt.row_bytes(cols as u64).unwrap() as usize];
    quantize_activations(vdt, &x, &mut act).unwrap();
    let mut out = vec![0f32; rows];

    let run = |isa: Isa, out: &mut [f32]| -> f64 {
        // Warm up, then repeat for at least 1 s; report the best pass.
        matvec_with_isa(isa, ty, cols, &w, 0..rows, &act, out).unwrap();
        let mut best = Duration::MAX;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            let t = thread_cpu_time();
            matvec_with_isa(isa, ty, cols, &w, 0..rows, &act, out).unwrap();
            best = best.min(thread_cpu_time() - t);
        }
        (rows * rb) as f64 / best.as_secs_f64() / 1e9
    };
    let scalar = run(Isa::Scalar, &mut out);
    let simd_isa = best_supported_isa();
    let simd = run(simd_isa, &mut out);
    println!(
        "{ty} {rows}x{cols} matvec, 1 thread: scalar {scalar:.2} GB/s, {simd_isa} {simd:.2} GB/s, \
         ratio {:.1}x (checksum {:.3})",
        simd / scalar,
        out.iter().map(|v| *v as f64).sum::<f64>()
    );

    let m = 64;
    let acts: Vec<u8> = act.iter().copied().cycle().take(m * act.len()).collect();
    let mut outm = vec![0f32; m * rows];
    let time_best = |f: &mut dyn FnMut()| {
        f();
        let mut best = Duration::MAX;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let t = thread_cpu_time();
            f();
            best = best.min(thread_cpu_time() - t);
        }
        best.as_secs_f64()
    };
    let isa = active_isa();
    let t_mm = time_best(&mut || matmul(ty, cols, &w, 0..rows, &acts, m, &mut outm, rows).unwrap());
    let t_mv = time_best(&mut || {
        for j in 0..m {
            let a = &acts[j * act.len()..(j + 1) * act.len()];
            matvec_with_isa(
                isa,
                ty,
                cols,
                &w,
                0..rows,
                a,
                &mut outm[j * rows..(j + 1) * rows],
            )
            .unwrap();
        }
    });
    let bytes = (m * rows * rb) as f64;
    println!(
        "{ty} {rows}x{cols} x {m} activation rows, 1 thread, {isa}: matmul {:.2} GB/s-equivalent, \
         {m} matvecs {:.2}, speedup {:.2}x",
        bytes / t_mm / 1e9,
        bytes / t_mv / 1e9,
        t_mv / t_mm
    );
}
