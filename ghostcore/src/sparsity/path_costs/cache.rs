//! Measured path costs kept between runs: one small text file per CPU, kernel set and FFN
//! shape under `<cache>/ghostcore/path-costs/`, so the few seconds of [`super::measure`] are
//! spent once per machine and model shape, as calibration is once per model.
//!
//! ```text
//! ghostcore-path-costs 1
//! cpu AMD EPYC (family 25 model 1 stepping 1)
//! kernel avx2
//! shape 576 1536 q5_0 q4_K,q6_K
//! gathered_rows 0.2010:0.3012 0.4012:0.4935 ...
//! exact_q4_k_down 0.0951:0.2210 ...
//! ```
//!
//! A file whose header does not match this process (another CPU model, kernel set, shape or
//! format revision) is not used; a malformed one is an error that names the file.
//! `GHOST_PATH_COSTS=builtin` keeps the built-in curves, `=retune` measures again.

use std::path::{Path, PathBuf};

use super::measure::{measure, FfnShape, MeasureOptions};
use super::{install_tuned, PathCosts, TimeCurve};
use crate::quant::GgmlType;
use crate::sparsity::input_major::InputMajorKernel;
use crate::{bail, Result};

/// Format revision of the file; bump when the measurement changes meaning.
pub const REVISION: u32 = 1;
const MAGIC: &str = "ghostcore-path-costs";
/// The environment variable that overrides the tuning (`builtin` or `retune`).
pub const ENV: &str = "GHOST_PATH_COSTS";

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

/// The file's text for `costs` measured for `shape` on this CPU.
pub fn to_text(shape: &FfnShape, costs: &PathCosts) -> String {
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
    for &ty in &shape.exact_down_types {
        if let Some(c) = costs.exact_down_curve(ty) {
            line(&exact_down_line(ty), c);
        }
    }
    s
}

/// The name of the line holding the exact `ty` down's curve (`exact_q4_k_down`, ...).
fn exact_down_line(ty: GgmlType) -> String {
    format!("exact_{}_down", ty.name().to_lowercase())
}

/// Parse a file's text for `shape` on this CPU: `Ok(None)` when its header is for another
/// CPU, kernel set, shape or revision; an error when it is malformed or lacks a curve.
pub fn from_text(shape: &FfnShape, text: &str) -> Result<Option<PathCosts>> {
    let mut lines = text.lines();
    for want in header(shape) {
        if lines.next() != Some(want.as_str()) {
            return Ok(None);
        }
    }
    let mut costs = PathCosts::builtin(shape.n_embd);
    let (mut rows, mut downs) = (false, Vec::new());
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
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
    if !rows || shape.exact_down_types.iter().any(|t| !downs.contains(t)) {
        bail!(Format, "path costs: a curve of the shape is missing");
    }
    Ok(Some(costs))
}

/// Read the curves for `shape` from `path` (`Ok(None)`: no such file, or one for another
/// CPU or shape).
pub fn read(path: &Path, shape: &FfnShape) -> Result<Option<PathCosts>> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_text(shape, &text)
            .map_err(|e| crate::Error::Format(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write the curves for `shape` to `path` (through a temporary file, so a reader never sees
/// half a file).
pub fn write(path: &Path, shape: &FfnShape, costs: &PathCosts) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, to_text(shape, costs))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Install this CPU's cached curves for `shape`, if a good cache file exists (never
/// measures: for library callers such as the C ABI, where a measurement would be a
/// surprise; `ghost tune -m MODEL` makes the file). Returns the file used.
pub fn install_cached(shape: &FfnShape) -> Option<PathBuf> {
    if std::env::var(ENV).is_ok_and(|v| v == "builtin") {
        super::clear_tuned_width(shape.n_embd);
        return None;
    }
    let path = cache_path(shape)?;
    let costs = read(&path, shape).ok()??;
    install_tuned(shape.n_embd, costs);
    Some(path)
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
                Ok(Some(c)) => {
                    install_tuned(shape.n_embd, c);
                    return Ok((c, Source::Cached(p.clone())));
                }
                Ok(None) => {}
                // A damaged file is measured again and overwritten.
                Err(e) => eprintln!("ghost: ignoring {e}"),
            }
        }
    }
    let costs = measure(shape, opts, progress)?;
    install_tuned(shape.n_embd, costs);
    let saved = path.filter(|p| write(p, shape, &costs).is_ok());
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
        c.exact_q4_k_down = TimeCurve::from_measured(&[(0.1, 0.4), (0.8, 1.9)]).unwrap();
        c.exact_q6_k_down = TimeCurve::from_measured(&[(0.15, 0.5), (0.8, 1.7)]).unwrap();
        c
    }

    #[test]
    fn text_round_trips() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, &c);
        assert!(text.starts_with("ghostcore-path-costs 1\ncpu "), "{text}");
        assert!(text.contains("\nshape 576 1536 q5_0 q4_K,q6_K\n"), "{text}");
        assert_eq!(from_text(&s, &text).unwrap(), Some(c));
    }

    #[test]
    fn another_shape_or_cpu_is_not_used_and_damage_is_an_error() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, &c);
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
        write(&p, &s, &c).unwrap();
        assert_eq!(read(&p, &s).unwrap(), Some(c));
        std::fs::write(&p, "ghostcore-path-costs 1\n").unwrap();
        assert_eq!(read(&p, &s).unwrap(), None, "header of another CPU");
        std::fs::write(&p, to_text(&s, &c).replace("0.9000:0.9500", "x")).unwrap();
        let e = read(&p, &s).unwrap_err().to_string();
        assert!(e.contains("costs.txt"), "names the file: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
