//! Measured path costs kept between runs: one small text file per CPU, kernel set and FFN
//! shape under `<cache>/ghostcore/path-costs/`, so the few seconds of [`super::measure`] are
//! spent once per machine and model shape, as calibration is once per model.
//!
//! ```text
//! ghostcore-path-costs 2
//! cpu AMD EPYC (family 26 model 2 stepping 0)
//! kernel vnni
//! shape 576 1536 q5_0 q4_K,q6_K
//! gathered_rows 0.2010:0.3012 0.4012:0.4935 ...
//! input_major 0.5017:0.6120 0.7014:0.8012 ...
//! exact_q4_k_down 0.0951:0.2210 ...
//! decode_check budget:2 1.0130 48
//! ```
//!
//! A file whose header does not match this process (another CPU model, kernel set, shape or
//! format revision) is not used; a malformed one is an error that names the file.
//! `GHOST_PATH_COSTS=builtin` keeps the built-in curves, `=retune` measures again.
//!
//! The optional `decode_check` line is `ghost tune`'s verdict in decode: the sparsity mode it
//! decoded with, the speed with these curves relative to the built-in ones (median of paired
//! blocks) and the number of pairs. Kernels timed in isolation are not decode, so curves
//! that decoded slower than the built-in ones are kept on file but not installed
//! ([`install_cached`]).

use std::path::{Path, PathBuf};

use super::measure::{measure, FfnShape, MeasureOptions};
use super::{install_tuned, PathCosts, TimeCurve};
use crate::quant::GgmlType;
use crate::sparsity::input_major::InputMajorKernel;
use crate::{bail, Result};

/// Format revision of the file; bump when the measurement changes meaning (2: the
/// input-major curve is measured too).
pub const REVISION: u32 = 2;
const MAGIC: &str = "ghostcore-path-costs";
/// The environment variable that overrides the tuning (`builtin` or `retune`).
pub const ENV: &str = "GHOST_PATH_COSTS";

/// `ghost tune`'s comparison, in decode, of the measured curves against the built-in ones.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeCheck {
    /// The sparsity mode decoded with (`budget:2`, ...).
    pub mode: String,
    /// Decode speed with the measured curves relative to the built-in ones (> 1: faster).
    pub speedup: f64,
    /// Paired blocks the median was taken over.
    pub pairs: usize,
}

impl DecodeCheck {
    /// Whether decode should use the measured curves: they were not slower.
    pub fn keeps_measured(&self) -> bool {
        self.speedup >= 1.0
    }
}

/// A cache file's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Cached {
    pub costs: PathCosts,
    /// `None` when `ghost tune` did not check the curves in decode.
    pub check: Option<DecodeCheck>,
}

/// What [`install_cached`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CachedUse {
    /// No usable file (or `GHOST_PATH_COSTS=builtin`): the built-in curves serve.
    None,
    /// The file's curves are installed.
    Installed(PathBuf),
    /// The file's curves decoded slower than the built-in ones: not installed.
    SlowerInDecode(PathBuf, DecodeCheck),
}

/// Where the curves a front end uses came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Read from this cache file.
    Cached(PathBuf),
    /// Measured now, and saved to this file when it could be written.
    Measured(Option<PathBuf>),
    /// The built-in curves, for the reason given.
    Builtin(String),
}

impl Source {
    /// The cache file holding the curves, if they are in one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::Cached(p) | Source::Measured(Some(p)) => Some(p),
            Source::Measured(None) | Source::Builtin(_) => None,
        }
    }
}

/// The CPU's model name with its family, model and stepping numbers (`/proc/cpuinfo`; a
/// VM may show only a generic name such as "AMD EPYC" for several generations), or
/// `unknown`.
pub fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match field("model name") {
        Some(name) => format!(
            "{name} (family {} model {} stepping {})",
            field("cpu family").unwrap_or_else(|| "?".into()),
            field("model").unwrap_or_else(|| "?".into()),
            field("stepping").unwrap_or_else(|| "?".into())
        ),
        None => "unknown".into(),
    }
}

fn kernel_name() -> &'static str {
    match InputMajorKernel::best() {
        InputMajorKernel::Scalar => "scalar",
        InputMajorKernel::Avx2 => "avx2",
        InputMajorKernel::Vnni => "vnni",
    }
}

fn shape_line(shape: &FfnShape) -> String {
    let downs: Vec<&str> = shape.exact_down_types.iter().map(|t| t.name()).collect();
    format!(
        "{} {} {} {}",
        shape.n_embd,
        shape.n_ff,
        shape.rows_type.name(),
        if downs.is_empty() {
            "-".to_string()
        } else {
            downs.join(",")
        }
    )
}

/// The header lines a file for `shape` on this CPU must start with.
fn header(shape: &FfnShape) -> [String; 4] {
    [
        format!("{MAGIC} {REVISION}"),
        format!("cpu {}", cpu_name()),
        format!("kernel {}", kernel_name()),
        format!("shape {}", shape_line(shape)),
    ]
}

/// The cache file for `shape` on this CPU (`None` without a cache directory).
pub fn cache_path(shape: &FfnShape) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(header(shape).join("\n"));
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = dirs::cache_dir()?.join("ghostcore").join("path-costs");
    Some(dir.join(format!("{name}.txt")))
}

/// The file's text for `costs` measured for `shape` on this CPU, with `check`'s verdict.
pub fn to_text(shape: &FfnShape, costs: &PathCosts, check: Option<&DecodeCheck>) -> String {
    let mut s = header(shape).join("\n");
    s.push('\n');
    let mut line = |name: &str, c: &TimeCurve| {
        s.push_str(name);
        for (x, y) in &c.points()[1..] {
            s.push_str(&format!(" {x:.4}:{y:.4}"));
        }
        s.push('\n');
    };
    line("gathered_rows", &costs.gathered_rows);
    if shape.has_input_major() {
        line("input_major", &costs.input_major);
    }
    for &ty in &shape.exact_down_types {
        if let Some(c) = costs.exact_down_curve(ty) {
            line(&exact_down_line(ty), c);
        }
    }
    if let Some(c) = check {
        s.push_str(&format!(
            "{CHECK_LINE} {} {:.4} {}\n",
            c.mode, c.speedup, c.pairs
        ));
    }
    s
}

const CHECK_LINE: &str = "decode_check";

fn parse_check(line: &str) -> Result<DecodeCheck> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let speedup = w.get(2).and_then(|v| v.parse::<f64>().ok());
    let pairs = w.get(3).and_then(|v| v.parse::<usize>().ok());
    match (w.len(), speedup, pairs) {
        (4, Some(speedup), Some(pairs)) if speedup.is_finite() && speedup > 0.0 && pairs > 0 => {
            Ok(DecodeCheck {
                mode: w[1].to_string(),
                speedup,
                pairs,
            })
        }
        _ => bail!(Format, "path costs: bad decode check {line:?}"),
    }
}

/// The name of the line holding the exact `ty` down's curve (`exact_q4_k_down`, ...).
fn exact_down_line(ty: GgmlType) -> String {
    format!("exact_{}_down", ty.name().to_lowercase())
}

/// Parse a file's text for `shape` on this CPU: `Ok(None)` when its header is for another
/// CPU, kernel set, shape or revision; an error when it is malformed or lacks a curve.
pub fn from_text(shape: &FfnShape, text: &str) -> Result<Option<Cached>> {
    let mut lines = text.lines();
    for want in header(shape) {
        if lines.next() != Some(want.as_str()) {
            return Ok(None);
        }
    }
    let mut costs = PathCosts::builtin(shape.n_embd);
    let (mut rows, mut input_major, mut downs, mut check) = (false, false, Vec::new(), None);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        if name == CHECK_LINE {
            check = Some(parse_check(line)?);
            continue;
        }
        let mut points = Vec::new();
        for w in words {
            let p = w
                .split_once(':')
                .and_then(|(x, y)| Some((x.parse::<f64>().ok()?, y.parse::<f64>().ok()?)));
            match p {
                Some(p) => points.push(p),
                None => bail!(Format, "path costs: bad point {w:?} in line {line:?}"),
            }
        }
        let Some(curve) = TimeCurve::from_measured(&points) else {
            bail!(Format, "path costs: line {line:?} is not a time curve");
        };
        if name == "gathered_rows" {
            (costs.gathered_rows, rows) = (curve, true);
            continue;
        }
        if name == "input_major" {
            (costs.input_major, input_major) = (curve, true);
            continue;
        }
        let slot = [GgmlType::Q4_K, GgmlType::Q6_K]
            .into_iter()
            .find(|&ty| exact_down_line(ty) == name)
            .and_then(|ty| Some((ty, costs.exact_down_curve_mut(ty)?)));
        match slot {
            Some((ty, slot)) => {
                *slot = curve;
                downs.push(ty);
            }
            None => bail!(Format, "path costs: unknown curve {name:?}"),
        }
    }
    if !rows
        || input_major != shape.has_input_major()
        || shape.exact_down_types.iter().any(|t| !downs.contains(t))
    {
        bail!(Format, "path costs: a curve of the shape is missing");
    }
    Ok(Some(Cached { costs, check }))
}

/// Read the curves for `shape` from `path` (`Ok(None)`: no such file, or one for another
/// CPU or shape).
pub fn read(path: &Path, shape: &FfnShape) -> Result<Option<Cached>> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_text(shape, &text)
            .map_err(|e| crate::Error::Format(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write the curves for `shape`, with `check`'s verdict, to `path` (through a temporary
/// file, so a reader never sees half a file).
pub fn write(
    path: &Path,
    shape: &FfnShape,
    costs: &PathCosts,
    check: Option<&DecodeCheck>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, to_text(shape, costs, check))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Install this CPU's cached curves for `shape`, if a good cache file exists and `ghost
/// tune` did not find them slower in decode than the built-in ones (never measures: for
/// the front ends and library callers such as the C ABI, where a measurement would be a
/// surprise; `ghost tune -m MODEL` makes the file). Otherwise the built-in curves serve.
pub fn install_cached(shape: &FfnShape) -> CachedUse {
    let builtin = std::env::var(ENV).is_ok_and(|v| v == "builtin");
    match cache_path(shape).filter(|_| !builtin) {
        Some(path) => install_from(&path, shape),
        None => {
            super::clear_tuned_width(shape.n_embd);
            CachedUse::None
        }
    }
}

/// [`install_cached`] from the file `path`.
pub fn install_from(path: &Path, shape: &FfnShape) -> CachedUse {
    super::clear_tuned_width(shape.n_embd);
    match read(path, shape) {
        Ok(Some(Cached { check: Some(c), .. })) if !c.keeps_measured() => {
            CachedUse::SlowerInDecode(path.to_path_buf(), c)
        }
        Ok(Some(cached)) => {
            install_tuned(shape.n_embd, cached.costs);
            CachedUse::Installed(path.to_path_buf())
        }
        _ => CachedUse::None,
    }
}

/// The curves for `shape`: from the cache, else measured (and cached), else the built-in
/// ones (scalar kernels, `GHOST_PATH_COSTS=builtin`); installed for the shape's width
/// either way. `force` (or `GHOST_PATH_COSTS=retune`) measures even when a file exists.
pub fn load_or_measure(
    shape: &FfnShape,
    opts: &MeasureOptions,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathCosts, Source)> {
    let env = std::env::var(ENV).unwrap_or_default();
    let builtin = |why: &str| {
        let c = PathCosts::builtin(shape.n_embd);
        super::clear_tuned_width(shape.n_embd);
        Ok((c, Source::Builtin(why.into())))
    };
    if env == "builtin" {
        return builtin(&format!("{ENV}=builtin"));
    }
    if InputMajorKernel::best() == InputMajorKernel::Scalar {
        return builtin("scalar kernels: bytes alone decide");
    }
    let path = cache_path(shape);
    if !force && env != "retune" {
        if let Some(p) = &path {
            match read(p, shape) {
                Ok(Some(Cached { costs, .. })) => {
                    install_tuned(shape.n_embd, costs);
                    return Ok((costs, Source::Cached(p.clone())));
                }
                Ok(None) => {}
                // A damaged file is measured again and overwritten.
                Err(e) => eprintln!("ghost: ignoring {e}"),
            }
        }
    }
    let costs = measure(shape, opts, progress)?;
    install_tuned(shape.n_embd, costs);
    let saved = path.filter(|p| write(p, shape, &costs, None).is_ok());
    Ok((costs, Source::Measured(saved)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> FfnShape {
        FfnShape {
            n_embd: 576,
            n_ff: 1536,
            rows_type: GgmlType::Q5_0,
            exact_down_types: vec![GgmlType::Q4_K, GgmlType::Q6_K],
        }
    }

    fn measured() -> PathCosts {
        let mut c = PathCosts::builtin(576);
        c.gathered_rows = TimeCurve::from_measured(&[(0.2, 0.3), (0.6, 0.7), (0.9, 0.95)]).unwrap();
        c.input_major = TimeCurve::from_measured(&[(0.5, 0.6), (0.7, 0.8), (0.9, 1.0)]).unwrap();
        c.exact_q4_k_down = TimeCurve::from_measured(&[(0.1, 0.4), (0.8, 1.9)]).unwrap();
        c.exact_q6_k_down = TimeCurve::from_measured(&[(0.15, 0.5), (0.8, 1.7)]).unwrap();
        c
    }

    #[test]
    fn text_round_trips() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, &c, None);
        assert!(text.starts_with("ghostcore-path-costs 2\ncpu "), "{text}");
        assert!(text.contains("\ninput_major 0.5000:0.6000 "), "{text}");
        assert!(text.contains("\nshape 576 1536 q5_0 q4_K,q6_K\n"), "{text}");
        let cached = Cached {
            costs: c,
            check: None,
        };
        assert_eq!(from_text(&s, &text).unwrap(), Some(cached));

        let check = DecodeCheck {
            mode: "input:0.1,cascade:0.2:0.4:upw".into(),
            speedup: 0.9731,
            pairs: 48,
        };
        let text = to_text(&s, &c, Some(&check));
        assert!(
            text.ends_with("\ndecode_check input:0.1,cascade:0.2:0.4:upw 0.9731 48\n"),
            "{text}"
        );
        let back = from_text(&s, &text).unwrap().unwrap();
        assert_eq!((back.costs, back.check), (c, Some(check)));
    }

    #[test]
    fn a_bad_decode_check_is_an_error() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, &c, None);
        for bad in [
            "decode_check budget:2 fast 3",
            "decode_check budget:2 1.01",
            "decode_check budget:2 0 3",
            "decode_check budget:2 1.01 0",
            "decode_check budget:2 1.01 3 extra",
        ] {
            let e = from_text(&s, &format!("{text}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bad decode check"), "{bad}: {e}");
        }
    }

    #[test]
    fn curves_slower_in_decode_are_not_installed() {
        let dir = std::env::temp_dir().join(format!("ghost-path-check-{}", std::process::id()));
        let p = dir.join("costs.txt");
        // A width no other test installs curves for (the tuned curves are process-wide).
        let s = FfnShape {
            n_embd: 4_352,
            ..shape()
        };
        let c = measured();
        let check = |speedup| DecodeCheck {
            mode: "budget:2".into(),
            speedup,
            pairs: 24,
        };
        assert_eq!(install_from(&p, &s), CachedUse::None, "no file");
        assert_eq!(super::super::tuned(s.n_embd), None);
        for (file_check, installed) in [(None, true), (Some(1.0), true), (Some(0.97), false)] {
            write(&p, &s, &c, file_check.map(check).as_ref()).unwrap();
            let used = install_from(&p, &s);
            if installed {
                assert_eq!(used, CachedUse::Installed(p.clone()));
                let on_file = read(&p, &s).unwrap().unwrap().costs;
                assert_eq!(on_file.gathered_rows, c.gathered_rows);
                assert_eq!(super::super::tuned(s.n_embd), Some(on_file));
            } else {
                assert_eq!(used, CachedUse::SlowerInDecode(p.clone(), check(0.97)));
                assert_eq!(super::super::tuned(s.n_embd), None, "built-in curves again");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_shape_or_cpu_is_not_used_and_damage_is_an_error() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, &c, None);
        let mut other = s.clone();
        other.n_ff = 2048;
        assert_eq!(from_text(&other, &text).unwrap(), None);
        let other_cpu = text.replacen("cpu ", "cpu Other ", 1);
        assert_eq!(from_text(&s, &other_cpu).unwrap(), None);
        assert_ne!(cache_path(&s), cache_path(&other));

        for (what, bad) in [
            ("bad point", text.replace("0.2000:0.3000", "0.2000;0.3000")),
            (
                "not a time curve",
                text.replace("0.2000:0.3000", "0.2000:-1"),
            ),
            ("unknown", format!("{text}gathered_cols 0.5:0.5\n")),
            (
                "missing",
                text.lines()
                    .filter(|l| !l.starts_with("exact_q6_k_down"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ] {
            let e = from_text(&s, &bad).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn files_are_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ghost-path-costs-{}", std::process::id()));
        let p = dir.join("costs.txt");
        let (s, c) = (shape(), measured());
        assert_eq!(read(&p, &s).unwrap(), None, "no file yet");
        write(&p, &s, &c, None).unwrap();
        assert_eq!(read(&p, &s).unwrap().map(|r| r.costs), Some(c));
        std::fs::write(&p, "ghostcore-path-costs 1\n").unwrap();
        assert_eq!(read(&p, &s).unwrap(), None, "header of another CPU");
        std::fs::write(&p, to_text(&s, &c, None).replace("0.9000:0.9500", "x")).unwrap();
        let e = read(&p, &s).unwrap_err().to_string();
        assert!(e.contains("costs.txt"), "names the file: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
