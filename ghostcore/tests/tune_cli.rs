//! `ghost tune` end to end on a synthetic model: it measures this CPU's sparse path costs at
//! the model's shape, caches them under the cache directory, reads them back on the next run,
//! measures again when the file is damaged, and keeps the built-in curves when told to; it
//! checks the curves in decode against the built-in ones, tries the sparse path classes off,
//! and records the verdicts, and the front ends do not use curves that decoded slower nor
//! classes that decoded faster off with their mode; one file per thread count.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ghost(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ghost"));
    c.env("XDG_CACHE_HOME", cache)
        .env_remove("GHOST_PATH_COSTS");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `c` (with `GHOST_PATH_COSTS=env` if given), asserted to succeed: its stdout and
/// stderr.
fn succeed(mut c: Command, env: Option<&str>) -> (String, String) {
    if let Some(v) = env {
        c.env("GHOST_PATH_COSTS", v);
    }
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    (out, err)
}

/// The cache file a `saved to …` / `cached: …` line names.
fn named_file(stdout: &str, after: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.contains(after))
        .unwrap_or_else(|| {
            panic!("no {after:?} in:\n{stdout}");
        });
    PathBuf::from(line.split(after).nth(1).unwrap().trim())
}

#[test]
fn tune_measures_caches_and_rereads() {
    let dir = std::env::temp_dir().join(format!("ghost-tune-cli-{}", std::process::id()));
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let model = dir.join("tiny.gguf");
    let st = ghost(&cache)
        .args(["synth", "--shape", "tiny", "-o"])
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    let tune = |extra: &[&str], env: Option<&str>| {
        let mut c = ghost(&cache);
        c.args(["tune", "--reps", "1", "-m"])
            .arg(&model)
            .args(extra);
        succeed(c, env)
    };

    let (out, err) = tune(&[], None);
    assert!(
        out.contains("decode check: not run (budget:2 needs a calibration sidecar"),
        "{out}"
    );
    if out.contains("built-in curves: scalar kernels") {
        eprintln!("skipped: this CPU runs the scalar kernels, where bytes alone decide");
        return;
    }
    assert!(out.contains("measured in"), "{out}\n{err}");
    assert!(err.contains("measuring gathered rows"), "{err}");
    let file = named_file(&out, "saved to ");
    assert!(
        file.starts_with(cache.join("ghostcore").join("path-costs")),
        "{file:?}"
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.starts_with("ghostcore-path-costs 5\ncpu "), "{saved}");
    assert!(saved.contains("\nthreads 1\n"), "{saved}");
    assert!(saved.contains("\ngathered_rows "), "{saved}");

    // The next run reads the file and prints the same curves.
    let (again, err) = tune(&[], None);
    assert_eq!(named_file(&again, "cached: "), file);
    assert!(!err.contains("measuring"), "{err}");
    let curves = |s: &str| s.lines().skip(2).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(curves(&again), curves(&out));

    // A damaged file is reported, measured again and rewritten.
    std::fs::write(
        &file,
        format!(
            "{}gathered_rows 0.5:x\n",
            saved.lines().take(5).collect::<Vec<_>>().join("\n") + "\n"
        ),
    )
    .unwrap();
    let (out, err) = tune(&[], None);
    assert!(
        err.contains("ignoring") && err.contains("bad point"),
        "{err}"
    );
    assert!(out.contains("measured in"), "{out}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("exact") || !saved.contains("exact"));

    // --force and GHOST_PATH_COSTS=retune measure although the file is good.
    for (extra, env) in [(&["--force"][..], None), (&[][..], Some("retune"))] {
        let (out, _) = tune(extra, env);
        assert!(out.contains("measured in"), "{out}");
    }
    // The decode check with a mode that needs no sidecar: built-in and measured blocks of 4
    // tokens alternate (16 tokens: 2 pairs), the verdict goes to the file.
    let check = [
        "--sparsity",
        "stat:0.5",
        "--check-tokens",
        "16",
        "--check-reps",
        "1",
        "--check-block",
        "4",
    ];
    let (out, err) = tune(&check, None);
    assert!(
        out.contains("decode check (stat:0.5, 1 × 16 tokens, 1 thread): measured curves at "),
        "{out}\n{err}"
    );
    assert!(out.contains("(median of 2 paired blocks)"), "{out}");
    let saved = std::fs::read_to_string(&file).unwrap();
    let verdict = saved
        .lines()
        .find(|l| l.starts_with("decode_check "))
        .unwrap_or_else(|| panic!("{saved}"));
    let words: Vec<&str> = verdict.split_whitespace().collect();
    assert_eq!((words[1], words[3]), ("stat:0.5", "2"), "{verdict}");
    let speedup: f64 = words[2].parse().unwrap();
    assert!(speedup > 0.0 && speedup.is_finite(), "{verdict}");
    let kept = if speedup >= 1.0 {
        "used from now on at 1 thread: measured curves"
    } else {
        "used from now on at 1 thread: built-in curves"
    };
    assert!(out.contains(kept), "verdict printed as recorded: {out}");
    // Then each sparse path class the decode took was tried off, each recorded with the
    // mode and printed.
    let path_checks: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("path_check "))
        .collect();
    for line in &path_checks {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((w.len(), w[2], w[4]), (6, "stat:0.5", "2"), "{line}");
        assert!(
            out.contains(&format!("path check: {} never taken: ", w[1])),
            "{out}"
        );
    }
    assert_eq!(
        out.matches("path check: ").count(),
        path_checks.len(),
        "{out}"
    );
    // Last, the sparse FFN against the dense one, recorded and printed.
    let sparse_check = saved
        .lines()
        .find(|l| l.starts_with("sparse_check "))
        .unwrap_or_else(|| panic!("{saved}"));
    let w: Vec<&str> = sparse_check.split_whitespace().collect();
    assert_eq!(
        (w.len(), w[1], w[3]),
        (5, "stat:0.5", "2"),
        "{sparse_check}"
    );
    assert!(
        out.contains("sparse check: the sparse FFN at ")
            && out.contains("(median of 2 paired blocks, faster in "),
        "{out}"
    );
    // Two pairs can never show dense significantly faster (the sign test needs 5 of 5).
    assert!(out.contains("): sparse kept"), "{out}");
    // --no-check records no verdict.
    let (out, _) = tune(&["--no-check"], None);
    assert!(out.contains("decode check: not run (--no-check)"), "{out}");
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains("decode_check"));

    // A front end uses checked curves only when they were not slower in decode, and never
    // the path classes that decoded faster off with its mode.
    let bench = |verdict: &str| {
        let on_file = std::fs::read_to_string(&file).unwrap();
        let kept: Vec<&str> = on_file
            .lines()
            .filter(|l| !l.ends_with("_check") && !l.contains("_check "))
            .collect();
        std::fs::write(&file, format!("{}\n{verdict}\n", kept.join("\n"))).unwrap();
        let o = ghost(&cache)
            .args([
                "bench",
                "-p",
                "0",
                "-n",
                "2",
                "-r",
                "1",
                "--sparsity",
                "stat:0.5",
                "-m",
            ])
            .arg(&model)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        err
    };
    let err = bench("decode_check stat:0.5 0.9100 24");
    assert!(
        err.contains("sparse paths tuned for 1 thread")
            && err.contains(
                "built-in curves (this CPU's measured ones decoded stat:0.5 at 0.91× their speed)"
            ),
        "{err}"
    );
    let err = bench("decode_check stat:0.5 1.0300 24");
    assert!(err.contains("curves measured on this CPU"), "{err}");
    assert!(!err.contains("never"), "{err}");
    let err = bench(
        "decode_check stat:0.5 1.0300 24\npath_check gathered_rows stat:0.5 1.0400 24 19\n\
         path_check exact_down stat:0.5 0.9900 24 10\npath_check input_major budget:2 1.1 24 20\n\
         path_check requantized_down stat:0.5 1.0200 24 14",
    );
    assert!(
        err.contains("curves measured on this CPU, never gathered_rows\n"),
        "only the classes faster off with this mode: {err}"
    );

    // Another thread count has a file of its own.
    let (out, _) = tune(&["--no-check", "-t", "2"], None);
    let file2 = named_file(&out, "saved to ");
    assert_ne!(file2, file);
    assert!(out.contains(", 2 threads"), "{out}");
    assert!(std::fs::read_to_string(&file2)
        .unwrap()
        .contains("\nthreads 2\n"));

    // GHOST_PATH_COSTS=builtin keeps the built-in curves.
    let (out, err) = tune(&[], Some("builtin"));
    assert!(
        out.contains("built-in curves: GHOST_PATH_COSTS=builtin"),
        "{out}\n{err}"
    );
    assert!(!err.contains("measuring"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ghost run`'s first sparse run with a mode at a thread count tunes the sparse paths for
/// this CPU and caches the verdict; the next run uses it without tuning; `--no-tune` and
/// `GHOST_PATH_COSTS` leave the tuning alone.
#[test]
fn first_sparse_run_tunes_once() {
    use ghostcore::test_models::{find_model, SMOLLM2_Q4_1};
    let Some(model) = find_model(SMOLLM2_Q4_1) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ghost-autotune-{}", std::process::id()));
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let run = |mode: &str, extra: &[&str], env: Option<&str>| {
        let mut c = ghost(&cache);
        c.args(["run", "-p", "Hello", "-n", "2", "--temp", "0", "-t", "1"])
            .args(["--sparsity", mode, "-m"])
            .arg(&model)
            .args(extra);
        succeed(c, env).1
    };

    let files = || -> Vec<PathBuf> {
        match std::fs::read_dir(cache.join("ghostcore").join("path-costs")) {
            Ok(d) => d.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    };
    let err = run("stat:0.5", &[], None);
    assert!(
        err.contains("tuning the sparse paths for this CPU, stat:0.5 at 1 thread"),
        "{err}"
    );
    assert!(err.contains("ghost: tuned in "), "{err}");
    let on_disk = files();
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    let saved = std::fs::read_to_string(&on_disk[0]).unwrap();
    assert!(saved.contains("\nthreads 1\n"), "{saved}");
    assert!(saved.contains("\ndecode_check stat:0.5 "), "{saved}");
    assert!(saved.contains("\nsparse_check stat:0.5 "), "{saved}");
    // The next run with the mode uses the verdict, without tuning.
    let err = run("stat:0.5", &[], None);
    assert!(!err.contains("tuning"), "{err}");
    assert!(err.contains("sparse paths tuned for 1 thread"), "{err}");
    // Where the tune found dense significantly faster with the mode, decode is dense and
    // says so, unless --force-sparse; where not, decode is sparse.
    let with_sparse_check = |line: &str| {
        let kept: Vec<String> = saved
            .lines()
            .filter(|l| !l.starts_with("sparse_check "))
            .map(str::to_string)
            .collect();
        std::fs::write(&on_disk[0], format!("{}\n{line}\n", kept.join("\n"))).unwrap();
    };
    with_sparse_check("sparse_check stat:0.5 0.9400 24 3");
    let err = run("stat:0.5", &[], None);
    assert!(
        err.contains(
            "ghost: decoding dense: on this CPU the sparse FFN decoded stat:0.5 at 0.94× the \
             dense speed with 1 thread (dense faster in 21 of 24 pairs"
        ),
        "{err}"
    );
    assert!(
        !err.contains("FFN bytes skipped"),
        "dense: no sparse tally\n{err}"
    );
    // A damaged sidecar is still an error, although the dense decode would not read it.
    let bad = dir.join("bad.ghost");
    std::fs::write(&bad, b"not a sidecar").unwrap();
    let o = ghost(&cache)
        .args([
            "run",
            "-p",
            "Hello",
            "-n",
            "2",
            "-t",
            "1",
            "--sparsity",
            "stat:0.5",
            "-m",
        ])
        .arg(&model)
        .arg("--mask")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o).1);
    let err = run("stat:0.5", &["--force-sparse"], None);
    assert!(!err.contains("decoding dense"), "{err}");
    assert!(err.contains("FFN bytes skipped"), "{err}");
    with_sparse_check("sparse_check stat:0.5 0.9900 24 9");
    let err = run("stat:0.5", &[], None);
    assert!(
        err.contains("at 0.990× the dense speed (faster in 9 of 24 pairs): sparse kept"),
        "{err}"
    );
    assert!(err.contains("FFN bytes skipped"), "{err}");
    with_sparse_check("");
    // Another mode would tune, but not with --no-tune or GHOST_PATH_COSTS set.
    for (extra, env) in [(&["--no-tune"][..], None), (&[][..], Some("builtin"))] {
        let err = run("gate:0.05", extra, env);
        assert!(!err.contains("tuning"), "{err}");
    }
    assert_eq!(files(), on_disk);
    assert!(!std::fs::read_to_string(&on_disk[0])
        .unwrap()
        .contains("gate:0.05"));
    let _ = std::fs::remove_dir_all(&dir);
}
