//! `ghost bench --sparsity MODE` end to end on a synthetic model: the dense and sparse decode
//! rows, and the sparse row's speed-up measured in paired dense/sparse blocks.

use std::process::Command;

#[test]
fn bench_reports_the_paired_sparse_speedup() {
    let dir = std::env::temp_dir().join(format!("ghost-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    let ghost = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ghost"));
        c.env("GHOST_PATH_COSTS", "builtin");
        c
    };
    let st = ghost()
        .args(["synth", "--shape", "tiny", "-o"])
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    let bench = |n: &str, format: &str| {
        let o = ghost()
            .args([
                "bench",
                "-p",
                "0",
                "-r",
                "2",
                "--sparsity",
                "stat:0.5",
                "-n",
                n,
                "-o",
                format,
                "-m",
            ])
            .arg(&model)
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert!(o.status.success(), "{out}\n{err}");
        out
    };

    // 33 tokens: the first is the prompt, the other 32 make two pairs of 8-token blocks per
    // repetition, so 2 × 2 pairs.
    let out = bench("33", "json");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["test"], "tg33");
    assert!(rows[0]["paired_speedup"].is_null(), "dense row: {out}");
    assert_eq!(rows[1]["test"], "tg33 stat:0.5");
    let s = rows[1]["paired_speedup"].as_f64().unwrap();
    assert!(s.is_finite() && s > 0.0, "{out}");
    assert_eq!(rows[1]["paired_blocks"], 4, "{out}");
    // The byte bound: stat:0.5 skips neurons, the FFN is a real share of a step's bytes, and
    // the bound is 1 / (1 − share · skipped).
    assert!(rows[0]["byte_bound_speedup"].is_null(), "dense row: {out}");
    let skipped = rows[1]["ffn_bytes_skipped"].as_f64().unwrap();
    let share = rows[1]["ffn_share_of_decode_bytes"].as_f64().unwrap();
    let bound = rows[1]["byte_bound_speedup"].as_f64().unwrap();
    assert!(skipped > 0.1 && skipped < 1.0, "{out}");
    assert!(share > 0.1 && share < 1.0, "{out}");
    assert!(
        (bound - 1.0 / (1.0 - share * skipped)).abs() < 1e-9,
        "{out}"
    );
    for r in rows {
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0, "{out}");
    }

    let out = bench("33", "md");
    assert!(
        out.contains("tg33 stat:0.5: ")
            && out.contains("× the dense decode speed (median of 4 paired 8-token blocks")
            && out.contains("of the weight bytes a step reads, allows "),
        "{out}"
    );
    // Too few tokens for a pair: the rows only.
    let out = bench("8", "md");
    assert!(
        out.contains("| tg8 stat:0.5 |") && !out.contains("paired"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
