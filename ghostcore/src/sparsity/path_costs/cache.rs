//! Measured path costs kept between runs: one small text file per CPU, kernel set and FFN
//! shape under `<cache>/ghostcore/path-costs/`, so the few seconds of [`super::measure`] are
//! spent once per machine and model shape, as calibration is once per model.
//!
//! ```text
//! ghostcore-path-costs 5
//! cpu AMD EPYC (family 26 model 2 stepping 0)
//! kernel vnni
//! threads 2
//! shape 576 1536 q5_0 q4_K,q6_K
//! gathered_rows 0.2010:0.3012 0.4012:0.4935 ...
//! input_major 0.5017:0.6120 0.7014:0.8012 ...
//! exact_q4_k_down 0.0951:0.2210 ...
//! decode_check budget:2 1.0130 48
//! path_check input_major budget:2 1.1210 24 20
//! path_check exact_down budget:2 0.9820 24 9
//! sparse_check budget:2 0.9480 24 4
//! ```
//!
//! One file per thread count: the curves are measured with that many workers and the
//! verdicts decoded with them, since the kernels do not scale alike. A file whose header
//! does not match this process (another CPU model, kernel set, thread count, shape or format
//! revision) is not used; a malformed one is an error that names the file.
//! `GHOST_PATH_COSTS=builtin` keeps the built-in curves, `=retune` measures again.
//!
//! The optional `decode_check` line is `ghost tune`'s verdict in decode: the sparsity mode it
//! decoded with, the speed with these curves relative to the built-in ones (median of paired
//! blocks) and the number of pairs. Kernels timed in isolation are not decode, so curves
//! that decoded slower than the built-in ones are kept on file but not installed
//! ([`install_cached`]). Each `path_check` line is a later step of the same check: decode
//! speed with one class of sparse paths never taken relative to the setting before it
//! (the curves kept, and the classes already turned off, in file order), over how many
//! pairs, and in how many of them decode was faster off; above 1 in significantly more pairs
//! than not (the sign test), the class stays off ([`PathCheck::turns_off`]) when decoding with that sparsity mode: a class that
//! does not pay at a mild setting can pay at a strong one (gathered rows at 20% kept), so
//! other modes keep every class their curves choose.
//!
//! The `sparse_check` line is the check's last step: decode speed of the sparse FFN, with
//! the setting the lines before it pick, relative to the dense FFN, over how many pairs, and
//! in how many of them the sparse FFN was faster. Where dense decoded faster in
//! significantly more pairs (the sign test, [`SparseCheck::decodes_dense`]), sparsity does
//! not pay on this CPU with that mode and thread count, and the front ends that decode with
//! the fastest paths decode densely instead, saying so (on a Zen 3 VM, SmolLM2's `budget:2`
//! decoded at 0.94–0.96× dense with 2 threads, `bench/results/2026-12-07-s12-bitplane.md`).
//! Like the other verdicts it was found on one model of the file's FFN shape.

use std::path::{Path, PathBuf};

use super::measure::{measure, FfnShape, MeasureOptions};
use super::{install_tuned, PathClass, PathCosts, PathSet, TimeCurve};
use crate::paired_speed::significant_wins;
use crate::quant::GgmlType;
use crate::sparsity::input_major::InputMajorKernel;
use crate::sparsity::rows::Splitter;
use crate::{bail, Result};

/// Format revision of the file; bump when the measurement changes meaning (2: the
/// input-major curve is measured too; 3: one file per thread count, measured with that many
/// workers, and `path_check` lines; 4: the exact Q4_K down copy keeps the original 6-bit
/// scales, so its curve covers other shares of the bytes and other times; 5: the
/// `sparse_check` line, so that files tuned without it are tuned again).
pub const REVISION: u32 = 5;
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

/// `ghost tune`'s comparison, in decode, of a setting with one class of sparse paths never
/// taken against the setting before it.
#[derive(Clone, Debug, PartialEq)]
pub struct PathCheck {
    pub class: PathClass,
    /// The sparsity mode decoded with.
    pub mode: String,
    /// Decode speed with the class off relative to on (> 1: faster off).
    pub speedup: f64,
    pub pairs: usize,
    /// Pairs in which decode was faster with the class off.
    pub wins: usize,
}

impl PathCheck {
    /// Whether decode should never take the class: it decoded faster without, in
    /// significantly more pairs than not (the sign test, [`significant_wins`]). A median
    /// above 1 alone is not enough: on a 2-thread VM a class turned off at 1.008× decoded
    /// 5% slower in the next runs.
    pub fn turns_off(&self) -> bool {
        self.speedup > 1.0 && significant_wins(self.wins, self.pairs)
    }
}

/// `ghost tune`'s last comparison, in decode: the sparse FFN, with the setting the other
/// verdicts pick, against the dense FFN.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseCheck {
    /// The sparsity mode decoded with.
    pub mode: String,
    /// Decode speed with the sparse FFN relative to the dense one (> 1: sparse faster).
    pub speedup: f64,
    pub pairs: usize,
    /// Pairs in which the sparse FFN decoded faster.
    pub wins: usize,
}

impl SparseCheck {
    /// Whether decode with this mode should use the dense FFN instead: dense decoded faster
    /// in significantly more pairs than not (the sign test, [`significant_wins`]). A median
    /// below 1 alone is not enough: sparsity is what the user asked for, and a sparse FFN
    /// that is as fast as dense still reads fewer bytes (less memory traffic for the other
    /// cores).
    pub fn decodes_dense(&self) -> bool {
        self.speedup < 1.0 && significant_wins(self.pairs - self.wins, self.pairs)
    }
}

/// What `ghost tune` found in decode about a file's curves, for one or more sparsity modes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdicts {
    /// Measured against built-in curves, one per mode tuned (the first: the mode tuned
    /// first, which serves the modes never tuned); empty when the curves were not checked.
    pub checks: Vec<DecodeCheck>,
    /// Path classes tried off, in order, each for its mode.
    pub paths: Vec<PathCheck>,
    /// The sparse FFN against the dense one, at most one per mode tuned.
    pub sparse: Vec<SparseCheck>,
}

impl Verdicts {
    /// Verdicts from one tuning run with one mode.
    pub fn of_one_mode(check: DecodeCheck, paths: Vec<PathCheck>) -> Self {
        Verdicts {
            checks: vec![check],
            paths,
            sparse: vec![],
        }
    }

    /// The sparse-against-dense check of `mode` itself, if it was tuned with it: unlike the
    /// curves, whether sparsity pays differs from mode to mode.
    pub fn sparse_check_for(&self, mode: &str) -> Option<&SparseCheck> {
        let mode = mode_word(mode);
        self.sparse.iter().find(|c| c.mode == mode)
    }

    /// The curve check that decides for `mode`: its own, else the first one.
    pub fn check_for(&self, mode: Option<&str>) -> Option<&DecodeCheck> {
        let mode = mode.map(mode_word);
        self.checks
            .iter()
            .find(|c| Some(&c.mode) == mode.as_ref())
            .or(self.checks.first())
    }

    /// These verdicts with `newer`'s for the modes it tuned replacing those held.
    pub fn merged_with(&self, newer: &Verdicts) -> Verdicts {
        let replaced = |mode: &String| newer.checks.iter().any(|c| &c.mode == mode);
        let mut v = Verdicts {
            checks: self
                .checks
                .iter()
                .filter(|c| !replaced(&c.mode))
                .cloned()
                .collect(),
            paths: self
                .paths
                .iter()
                .filter(|p| !replaced(&p.mode))
                .cloned()
                .collect(),
            sparse: self
                .sparse
                .iter()
                .filter(|c| !replaced(&c.mode))
                .cloned()
                .collect(),
        };
        v.checks.extend(newer.checks.iter().cloned());
        v.paths.extend(newer.paths.iter().cloned());
        v.sparse.extend(newer.sparse.iter().cloned());
        v
    }

    /// The curves decode with sparsity mode `mode` should use given the `measured` ones for
    /// a layer of width `n_embd` at `n_threads` workers: the measured ones unless they
    /// decoded slower than the built-in ones, with the classes that decoded faster off in
    /// that mode turned off.
    pub fn decode_costs(
        &self,
        measured: &PathCosts,
        n_embd: usize,
        n_threads: usize,
        mode: Option<&str>,
    ) -> PathCosts {
        let base = match self.check_for(mode) {
            Some(c) if !c.keeps_measured() => PathCosts::builtin(n_embd, n_threads),
            _ => *measured,
        };
        self.off(mode).iter().fold(base, PathCosts::without)
    }

    /// The classes these verdicts turn off when decoding with `mode` (none without one).
    pub fn off(&self, mode: Option<&str>) -> PathSet {
        let Some(mode) = mode.map(mode_word) else {
            return PathSet::EMPTY;
        };
        self.paths
            .iter()
            .filter(|p| p.turns_off() && p.mode == mode)
            .fold(PathSet::EMPTY, |s, p| s.with(p.class))
    }
}

/// A sparsity mode as one word, as the cache file records it (its lines split on
/// whitespace).
pub fn mode_word(mode: &str) -> String {
    mode.split_whitespace().collect()
}

/// A cache file's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Cached {
    /// The measured curves (no class off).
    pub costs: PathCosts,
    pub verdicts: Verdicts,
}

/// What [`install_cached`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CachedUse {
    /// No usable file (or `GHOST_PATH_COSTS=builtin`): the built-in curves serve.
    None,
    /// The file's setting is installed: its measured curves, or the built-in ones where
    /// the measured ones decoded slower (`check`), with the classes in `off` never taken
    /// (those that decoded faster off with the mode installed for).
    Installed {
        path: PathBuf,
        measured: bool,
        check: Option<DecodeCheck>,
        off: PathSet,
        /// The mode's sparse-against-dense check, if it was tuned with it.
        sparse: Option<SparseCheck>,
    },
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

/// The header lines a file for `shape` at `n_threads` workers on this CPU must start with.
fn header(shape: &FfnShape, n_threads: usize) -> [String; 5] {
    [
        format!("{MAGIC} {REVISION}"),
        format!("cpu {}", cpu_name()),
        format!("kernel {}", kernel_name()),
        format!("threads {n_threads}"),
        format!("shape {}", shape_line(shape)),
    ]
}

/// The cache file for `shape` at `n_threads` workers on this CPU (`None` without a cache
/// directory).
pub fn cache_path(shape: &FfnShape, n_threads: usize) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(header(shape, n_threads).join("\n"));
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = dirs::cache_dir()?.join("ghostcore").join("path-costs");
    Some(dir.join(format!("{name}.txt")))
}

/// The file's text for `costs` measured for `shape` at `n_threads` workers on this CPU, with
/// `verdicts`.
pub fn to_text(
    shape: &FfnShape,
    n_threads: usize,
    costs: &PathCosts,
    verdicts: &Verdicts,
) -> String {
    let mut s = header(shape, n_threads).join("\n");
    s.push('\n');
    let mut line = |name: &str, c: &TimeCurve| {
        s.push_str(name);
        for (x, y) in &c.points()[1..] {
            // 4 decimals: the precision `TimeCurve::from_measured` keeps.
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
    for c in &verdicts.checks {
        s.push_str(&format!(
            "{CHECK_LINE} {} {:.4} {}\n",
            c.mode, c.speedup, c.pairs
        ));
    }
    for p in &verdicts.paths {
        s.push_str(&format!(
            "{PATH_LINE} {} {} {:.4} {} {}\n",
            p.class.name(),
            p.mode,
            p.speedup,
            p.pairs,
            p.wins
        ));
    }
    for c in &verdicts.sparse {
        s.push_str(&format!(
            "{SPARSE_LINE} {} {:.4} {} {}\n",
            c.mode, c.speedup, c.pairs, c.wins
        ));
    }
    s
}

const CHECK_LINE: &str = "decode_check";
const PATH_LINE: &str = "path_check";
const SPARSE_LINE: &str = "sparse_check";

fn parse_sparse_check(line: &str) -> Result<SparseCheck> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let speedup = w.get(2).and_then(|v| v.parse::<f64>().ok());
    let pairs = w.get(3).and_then(|v| v.parse::<usize>().ok());
    let wins = w.get(4).and_then(|v| v.parse::<usize>().ok());
    match (w.len(), speedup, pairs, wins) {
        (5, Some(speedup), Some(pairs), Some(wins))
            if speedup.is_finite() && speedup > 0.0 && pairs > 0 && wins <= pairs =>
        {
            Ok(SparseCheck {
                mode: w[1].to_string(),
                speedup,
                pairs,
                wins,
            })
        }
        _ => bail!(Format, "path costs: bad sparse check {line:?}"),
    }
}

fn parse_path_check(line: &str) -> Result<PathCheck> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let class = w.get(1).and_then(|v| PathClass::from_name(v));
    let speedup = w.get(3).and_then(|v| v.parse::<f64>().ok());
    let pairs = w.get(4).and_then(|v| v.parse::<usize>().ok());
    let wins = w.get(5).and_then(|v| v.parse::<usize>().ok());
    match (w.len(), class, speedup, pairs, wins) {
        (6, Some(class), Some(speedup), Some(pairs), Some(wins))
            if speedup.is_finite() && speedup > 0.0 && pairs > 0 && wins <= pairs =>
        {
            Ok(PathCheck {
                class,
                mode: w[2].to_string(),
                speedup,
                pairs,
                wins,
            })
        }
        _ => bail!(Format, "path costs: bad path check {line:?}"),
    }
}

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

/// Parse a file's text for `shape` at `n_threads` workers on this CPU: `Ok(None)` when its
/// header is for another CPU, kernel set, thread count, shape or revision; an error when it
/// is malformed or lacks a curve.
pub fn from_text(shape: &FfnShape, n_threads: usize, text: &str) -> Result<Option<Cached>> {
    let mut lines = text.lines();
    for want in header(shape, n_threads) {
        if lines.next() != Some(want.as_str()) {
            return Ok(None);
        }
    }
    let mut costs = PathCosts::builtin(shape.n_embd, n_threads);
    let (mut rows, mut input_major, mut downs) = (false, false, Vec::new());
    let mut verdicts = Verdicts::default();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        if name == CHECK_LINE {
            verdicts.checks.push(parse_check(line)?);
            continue;
        }
        if name == PATH_LINE {
            verdicts.paths.push(parse_path_check(line)?);
            continue;
        }
        if name == SPARSE_LINE {
            verdicts.sparse.push(parse_sparse_check(line)?);
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
    Ok(Some(Cached { costs, verdicts }))
}

/// Read the curves for `shape` at `n_threads` workers from `path` (`Ok(None)`: no such
/// file, or one for another CPU, thread count or shape).
pub fn read(path: &Path, shape: &FfnShape, n_threads: usize) -> Result<Option<Cached>> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_text(shape, n_threads, &text)
            .map_err(|e| crate::Error::Format(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write the curves for `shape` at `n_threads` workers, with `verdicts`, to `path` (through
/// a temporary file, so a reader never sees half a file).
pub fn write(
    path: &Path,
    shape: &FfnShape,
    n_threads: usize,
    costs: &PathCosts,
    verdicts: &Verdicts,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, to_text(shape, n_threads, costs, verdicts))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Install this CPU's tuned setting for `shape` at `n_threads` workers, if a good cache
/// file exists ([`Verdicts::decode_costs`]: the measured curves unless `ghost tune` found
/// them slower in decode than the built-in ones, without the path classes that decoded
/// faster off). Never measures: for the front ends and library callers such as the C ABI,
/// where a measurement would be a surprise; `ghost tune -m MODEL -t N` makes the file (and
/// `ghost run`'s first sparse run with a mode and thread count, `cli::sparsity_setup`).
/// Otherwise the built-in curves serve.
pub fn install_cached(shape: &FfnShape, n_threads: usize, mode: Option<&str>) -> CachedUse {
    let builtin = std::env::var(ENV).is_ok_and(|v| v == "builtin");
    match cache_path(shape, n_threads).filter(|_| !builtin) {
        Some(path) => install_from(&path, shape, n_threads, mode),
        None => {
            super::clear_tuned(shape.n_embd, n_threads);
            CachedUse::None
        }
    }
}

/// [`install_cached`] from the file `path`.
pub fn install_from(
    path: &Path,
    shape: &FfnShape,
    n_threads: usize,
    mode: Option<&str>,
) -> CachedUse {
    super::clear_tuned(shape.n_embd, n_threads);
    match read(path, shape, n_threads) {
        Ok(Some(cached)) => {
            let v = &cached.verdicts;
            install_tuned(
                shape.n_embd,
                n_threads,
                v.decode_costs(&cached.costs, shape.n_embd, n_threads, mode),
            );
            CachedUse::Installed {
                path: path.to_path_buf(),
                measured: v.check_for(mode).is_none_or(DecodeCheck::keeps_measured),
                check: v.check_for(mode).cloned(),
                off: v.off(mode),
                sparse: mode.and_then(|m| v.sparse_check_for(m)).cloned(),
            }
        }
        _ => CachedUse::None,
    }
}

/// The curves for `shape` at `exec`'s worker count: from the cache (the measured ones,
/// without verdicts), else measured with `exec` (and cached, with no verdicts), else the
/// built-in ones (scalar kernels, `GHOST_PATH_COSTS=builtin`); installed for the shape's
/// width and worker count either way. `force` (or `GHOST_PATH_COSTS=retune`) measures even
/// when a file exists.
pub fn load_or_measure(
    shape: &FfnShape,
    opts: &MeasureOptions,
    exec: &dyn Splitter,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathCosts, Source)> {
    let n_threads = exec.n_workers();
    let env = std::env::var(ENV).unwrap_or_default();
    let builtin = |why: &str| {
        let c = PathCosts::builtin(shape.n_embd, n_threads);
        super::clear_tuned(shape.n_embd, n_threads);
        Ok((c, Source::Builtin(why.into())))
    };
    if env == "builtin" {
        return builtin(&format!("{ENV}=builtin"));
    }
    if InputMajorKernel::best() == InputMajorKernel::Scalar {
        return builtin("scalar kernels: bytes alone decide");
    }
    let path = cache_path(shape, n_threads);
    if !force && env != "retune" {
        if let Some(p) = &path {
            match read(p, shape, n_threads) {
                Ok(Some(Cached { costs, .. })) => {
                    install_tuned(shape.n_embd, n_threads, costs);
                    return Ok((costs, Source::Cached(p.clone())));
                }
                Ok(None) => {}
                // A damaged file is measured again and overwritten.
                Err(e) => eprintln!("ghost: ignoring {e}"),
            }
        }
    }
    let costs = measure(shape, opts, exec, progress)?;
    install_tuned(shape.n_embd, n_threads, costs);
    let saved = path.filter(|p| write(p, shape, n_threads, &costs, &Verdicts::default()).is_ok());
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
        let mut c = PathCosts::builtin(576, 1);
        c.gathered_rows = TimeCurve::from_measured(&[(0.2, 0.3), (0.6, 0.7), (0.9, 0.95)]).unwrap();
        c.input_major = TimeCurve::from_measured(&[(0.5, 0.6), (0.7, 0.8), (0.9, 1.0)]).unwrap();
        c.exact_q4_k_down = TimeCurve::from_measured(&[(0.1, 0.4), (0.8, 1.9)]).unwrap();
        c.exact_q6_k_down = TimeCurve::from_measured(&[(0.15, 0.5), (0.8, 1.7)]).unwrap();
        c
    }

    fn none() -> Verdicts {
        Verdicts::default()
    }

    #[test]
    fn text_round_trips() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, 1, &c, &none());
        assert!(
            text.starts_with(&format!("ghostcore-path-costs {REVISION}\ncpu ")),
            "{text}"
        );
        assert!(text.contains("\nthreads 1\n"), "{text}");
        assert!(text.contains("\ninput_major 0.5000:0.6000 "), "{text}");
        assert!(text.contains("\nshape 576 1536 q5_0 q4_K,q6_K\n"), "{text}");
        let cached = Cached {
            costs: c,
            verdicts: none(),
        };
        assert_eq!(from_text(&s, 1, &text).unwrap(), Some(cached));
        assert_eq!(
            from_text(&s, 2, &text).unwrap(),
            None,
            "another thread count"
        );

        let verdicts = Verdicts {
            checks: vec![DecodeCheck {
                mode: "input:0.1,cascade:0.2:0.4:upw".into(),
                speedup: 0.9731,
                pairs: 48,
            }],
            paths: vec![
                PathCheck {
                    class: PathClass::InputMajor,
                    mode: "budget:2".into(),
                    speedup: 1.1210,
                    pairs: 24,
                    wins: 20,
                },
                PathCheck {
                    class: PathClass::ExactDown,
                    mode: "budget:2".into(),
                    speedup: 0.982,
                    pairs: 24,
                    wins: 9,
                },
            ],
            sparse: vec![SparseCheck {
                mode: "budget:2".into(),
                speedup: 0.948,
                pairs: 24,
                wins: 4,
            }],
        };
        let text = to_text(&s, 2, &c, &verdicts);
        assert!(
            text.ends_with(
                "\ndecode_check input:0.1,cascade:0.2:0.4:upw 0.9731 48\n\
                 path_check input_major budget:2 1.1210 24 20\n\
                 path_check exact_down budget:2 0.9820 24 9\n\
                 sparse_check budget:2 0.9480 24 4\n"
            ),
            "{text}"
        );
        let back = from_text(&s, 2, &text).unwrap().unwrap();
        assert_eq!((back.costs, &back.verdicts), (c, &verdicts));
    }

    #[test]
    fn verdicts_pick_the_curves_and_the_classes_off() {
        let c = measured();
        let builtin = PathCosts::builtin(576, 1);
        let check = |speedup| DecodeCheck {
            mode: "budget:2".into(),
            speedup,
            pairs: 24,
        };
        let path = |class, speedup: f64| PathCheck {
            class,
            mode: "budget:2".into(),
            speedup,
            pairs: 24,
            wins: if speedup > 1.0 { 18 } else { 8 },
        };
        assert_eq!(
            none().decode_costs(&c, 576, 1, None),
            c,
            "unchecked: the measured curves"
        );
        let slower = Verdicts::of_one_mode(check(0.97), vec![]);
        assert_eq!(slower.decode_costs(&c, 576, 1, Some("budget:2")), builtin);
        let v = Verdicts {
            checks: vec![check(1.0)],
            paths: vec![
                path(PathClass::InputMajor, 1.08),
                path(PathClass::ExactDown, 0.99),
                path(PathClass::GatheredRows, 1.0),
                PathCheck {
                    wins: 16,
                    ..path(PathClass::RequantizedDown, 1.03)
                },
            ],
            sparse: vec![],
        };
        let want = c.without(PathClass::InputMajor);
        let budget = Some("budget:2");
        assert_eq!(
            v.decode_costs(&c, 576, 1, budget),
            want,
            "only what decoded faster off in significantly more pairs"
        );
        assert_eq!(v.off(budget), PathSet::EMPTY.with(PathClass::InputMajor));
        assert_eq!(
            v.decode_costs(&c, 576, 1, Some("stat:0.5")),
            c,
            "in that mode only"
        );
        assert_eq!(v.decode_costs(&c, 576, 1, None), c);
        assert_eq!(v.off(Some(" budget:2 ")), v.off(budget), "as one word");
        let on_builtin = Verdicts {
            checks: vec![check(0.9)],
            ..v.clone()
        };
        assert_eq!(
            on_builtin.decode_costs(&c, 576, 1, budget),
            builtin.without(PathClass::InputMajor)
        );
        // A second mode tuned: its own curve verdict and classes; untuned modes follow the
        // first mode's curve verdict, with every class on.
        let stat = Verdicts::of_one_mode(
            DecodeCheck {
                mode: "stat:0.5".into(),
                speedup: 0.95,
                pairs: 24,
            },
            vec![PathCheck {
                mode: "stat:0.5".into(),
                ..path(PathClass::ExactDown, 1.02)
            }],
        );
        let both = v.merged_with(&stat);
        assert_eq!(both.checks.len(), 2);
        assert_eq!(both.decode_costs(&c, 576, 1, budget), want);
        assert_eq!(
            both.decode_costs(&c, 576, 1, Some("stat:0.5")),
            builtin.without(PathClass::ExactDown)
        );
        assert_eq!(both.decode_costs(&c, 576, 1, Some("target:0.5:act")), c);
        let retuned = both.merged_with(&Verdicts::of_one_mode(check(0.98), vec![]));
        assert_eq!(retuned.checks.len(), 2, "budget:2's verdicts replaced");
        assert_eq!(retuned.decode_costs(&c, 576, 1, budget), builtin);
        assert_eq!(retuned.paths.len(), 1, "stat:0.5's path check kept");
    }

    #[test]
    fn measured_curves_read_back_equal() {
        let s = shape();
        let mut c = measured();
        c.gathered_rows =
            TimeCurve::from_measured(&[(0.183_31, 0.444_949_9), (0.6, 0.765_55)]).unwrap();
        let back = from_text(&s, 1, &to_text(&s, 1, &c, &none()))
            .unwrap()
            .unwrap();
        assert_eq!(back.costs, c);
    }

    #[test]
    fn a_bad_decode_or_path_check_is_an_error() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, 1, &c, &none());
        for bad in [
            "decode_check budget:2 fast 3",
            "decode_check budget:2 1.01",
            "decode_check budget:2 0 3",
            "decode_check budget:2 1.01 0",
            "decode_check budget:2 1.01 3 extra",
        ] {
            let e = from_text(&s, 1, &format!("{text}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bad decode check"), "{bad}: {e}");
        }
        for bad in [
            "path_check input_major budget:2 fast 3 2",
            "path_check input_cols budget:2 1.01 3 2",
            "path_check input_major budget:2 1.01 3",
            "path_check input_major budget:2 -1 3 2",
            "path_check input_major budget:2 1.01 0 0",
            "path_check input_major budget:2 1.01 3 4",
            "path_check input_major budget:2 1.01 3 2 extra",
        ] {
            let e = from_text(&s, 1, &format!("{text}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bad path check"), "{bad}: {e}");
        }
        for bad in [
            "sparse_check budget:2 slow 24 4",
            "sparse_check budget:2 0.95 24",
            "sparse_check budget:2 0 24 4",
            "sparse_check budget:2 0.95 0 0",
            "sparse_check budget:2 0.95 24 25",
            "sparse_check budget:2 0.95 24 4 extra",
        ] {
            let e = from_text(&s, 1, &format!("{text}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains("bad sparse check"), "{bad}: {e}");
        }
    }

    #[test]
    fn dense_decodes_only_where_it_was_significantly_faster() {
        let check = |speedup, wins| SparseCheck {
            mode: "budget:2".into(),
            speedup,
            pairs: 24,
            wins,
        };
        // Dense faster in 20 of 24 pairs (p = 0.0008): dense; in 16 (p = 0.076): sparse kept.
        assert!(check(0.948, 4).decodes_dense());
        assert!(!check(0.98, 8).decodes_dense());
        assert!(
            !check(1.02, 4).decodes_dense(),
            "a median above 1 keeps sparse"
        );
        assert!(!check(1.05, 20).decodes_dense());
        let v = Verdicts {
            sparse: vec![check(0.948, 4)],
            ..Verdicts::default()
        };
        assert_eq!(v.sparse_check_for(" budget:2"), Some(&check(0.948, 4)));
        assert_eq!(
            v.sparse_check_for("stat:0.5"),
            None,
            "per mode, no fallback"
        );
        // Retuning a mode replaces its sparse check; another mode's stays.
        let stat = Verdicts {
            sparse: vec![SparseCheck {
                mode: "stat:0.5".into(),
                ..check(1.1, 22)
            }],
            ..Verdicts::default()
        };
        let both = v.merged_with(&stat);
        assert_eq!(both.sparse.len(), 2);
        let retuned = both.merged_with(&Verdicts {
            checks: vec![DecodeCheck {
                mode: "budget:2".into(),
                speedup: 1.0,
                pairs: 24,
            }],
            ..Verdicts::default()
        });
        assert_eq!(retuned.sparse_check_for("budget:2"), None);
        assert!(retuned.sparse_check_for("stat:0.5").is_some());
    }

    #[test]
    fn the_installed_setting_follows_the_verdicts() {
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
        let budget = Some("budget:2");
        assert_eq!(install_from(&p, &s, 2, budget), CachedUse::None, "no file");
        assert_eq!(super::super::tuned(s.n_embd, 2), None);
        let input_off = vec![PathCheck {
            class: PathClass::InputMajor,
            mode: "budget:2".into(),
            speedup: 1.05,
            pairs: 24,
            wins: 19,
        }];
        for (file_check, paths, measured_used) in [
            (None, vec![], true),
            (Some(1.0), vec![], true),
            (Some(0.97), vec![], false),
            (Some(0.97), input_off.clone(), false),
            (Some(1.02), input_off, true),
        ] {
            let v = Verdicts {
                checks: file_check.map(check).into_iter().collect(),
                paths,
                sparse: vec![],
            };
            write(&p, &s, 2, &c, &v).unwrap();
            assert_eq!(
                install_from(&p, &s, 1, budget),
                CachedUse::None,
                "another thread count"
            );
            let used = install_from(&p, &s, 2, budget);
            assert_eq!(
                used,
                CachedUse::Installed {
                    path: p.clone(),
                    measured: measured_used,
                    check: v.checks.first().cloned(),
                    off: v.off(budget),
                    sparse: None,
                }
            );
            let installed = super::super::tuned(s.n_embd, 2).unwrap();
            let base = if measured_used {
                c
            } else {
                PathCosts::builtin(s.n_embd, 1)
            };
            assert_eq!(installed.gathered_rows, base.gathered_rows);
            assert_eq!(installed.off, v.off(budget));
            install_from(&p, &s, 2, Some("stat:0.5"));
            assert_eq!(
                super::super::tuned(s.n_embd, 2).unwrap().off,
                PathSet::EMPTY
            );
        }
        // The sparse-against-dense check reaches the front end for its own mode only.
        let dense_wins = SparseCheck {
            mode: "budget:2".into(),
            speedup: 0.95,
            pairs: 24,
            wins: 3,
        };
        let v = Verdicts {
            checks: vec![check(1.0)],
            sparse: vec![dense_wins.clone()],
            ..Verdicts::default()
        };
        write(&p, &s, 2, &c, &v).unwrap();
        match install_from(&p, &s, 2, budget) {
            CachedUse::Installed { sparse, .. } => assert_eq!(sparse, Some(dense_wins)),
            other => panic!("{other:?}"),
        }
        match install_from(&p, &s, 2, Some("stat:0.5")) {
            CachedUse::Installed { sparse, .. } => assert_eq!(sparse, None),
            other => panic!("{other:?}"),
        }
        super::super::clear_tuned(s.n_embd, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_shape_or_cpu_is_not_used_and_damage_is_an_error() {
        let (s, c) = (shape(), measured());
        let text = to_text(&s, 1, &c, &none());
        let mut other = s.clone();
        other.n_ff = 2048;
        assert_eq!(from_text(&other, 1, &text).unwrap(), None);
        let other_cpu = text.replacen("cpu ", "cpu Other ", 1);
        assert_eq!(from_text(&s, 1, &other_cpu).unwrap(), None);
        assert_ne!(cache_path(&s, 1), cache_path(&other, 1));
        assert_ne!(cache_path(&s, 1), cache_path(&s, 2));

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
            let e = from_text(&s, 1, &bad).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn files_are_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ghost-path-costs-{}", std::process::id()));
        let p = dir.join("costs.txt");
        let (s, c) = (shape(), measured());
        assert_eq!(read(&p, &s, 1).unwrap(), None, "no file yet");
        write(&p, &s, 1, &c, &none()).unwrap();
        assert_eq!(read(&p, &s, 1).unwrap().map(|r| r.costs), Some(c));
        std::fs::write(&p, "ghostcore-path-costs 1\n").unwrap();
        assert_eq!(read(&p, &s, 1).unwrap(), None, "header of another CPU");
        std::fs::write(
            &p,
            to_text(&s, 1, &c, &none()).replace("0.9000:0.9500", "x"),
        )
        .unwrap();
        let e = read(&p, &s, 1).unwrap_err().to_string();
        assert!(e.contains("costs.txt"), "names the file: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
