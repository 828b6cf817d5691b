//! The sparsity sidecar: a GGUF file next to the model (`MODEL.ghost`) holding what
//! calibration learned. The model's own GGUF is never modified.
//!
//! Metadata: `general.type = "ghostcore.sparsity"`, `ghost.sidecar.version`,
//! `ghost.model.checksum` (SHA-256 over the FFN tensors, see [`model_checksum`]),
//! `ghost.model.arch`, shapes, calibration settings, the target grid, per-layer histograms
//! (`ghost.blk.N.hist_{act,prod,input}`, u64 arrays) and the budget table.
//! Tensors per layer `N` (prefix `blk.N.sparsity.`): per-neuron statistics (F32 `[n_ff]`),
//! thresholds per target (F32 `[n_targets]`), the dead mask (I8 `[n_ff]`), the hot-first
//! order (I32 `[n_ff]`); optionally `blk.N.ffn_down_t` (neuron-major `ffn_down`,
//! `[n_embd, n_ff]` in ggml order).

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::histogram::LogHistogram;
use super::mode::Score;
use super::stats::{CalibrationStats, TARGETS};
use crate::gguf::{Array, GgufFile, GgufWriter, Value};
use crate::quant::GgmlType;
use crate::{bail, Error, Result};

pub const SIDECAR_TYPE: &str = "ghostcore.sparsity";
pub const SIDECAR_VERSION: u32 = 1;

/// Per-layer tensors added with the up-first score: absent from older sidecars, which load
/// without them (and are written back without them).
const UP_FIRST_KEYS: [&str; 3] = ["thr_actw", "loss_upw", "loss_actw"];

/// What calibration stored about one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCalibration {
    /// Share of tokens with |act(gate·x)| > ε.
    pub freq_act: Vec<f32>,
    /// Share of tokens with |act(gate·x)·(up·x)| > ε.
    pub freq_prod: Vec<f32>,
    pub mean_abs_act: Vec<f32>,
    pub mean_abs_up: Vec<f32>,
    pub max_abs_act: Vec<f32>,
    pub max_abs_prod: Vec<f32>,
    pub hist_act: LogHistogram,
    pub hist_prod: LogHistogram,
    pub hist_input: LogHistogram,
    /// Thresholds per target sparsity, indexed like [`Sidecar::targets`].
    pub thr_act: Vec<f32>,
    pub thr_prod: Vec<f32>,
    pub thr_upw: Vec<f32>,
    /// Thresholds of the up-first score |up·x|·mean|act| (`actw`); empty in sidecars
    /// written before that score existed.
    pub thr_actw: Vec<f32>,
    /// Per target: the share of Σ|act·up|² on the calibration sample that a first stage by
    /// `upw` / by `actw` of that share loses (what `auto` chooses by); empty in sidecars
    /// written before the up-first score existed.
    pub loss_upw: Vec<f32>,
    pub loss_actw: Vec<f32>,
    pub thr_input: Vec<f32>,
    /// Neurons never above ε (by |act·up|) on the corpus.
    pub dead: Vec<bool>,
    /// Neuron ids, most frequently firing first.
    pub hot_order: Vec<u32>,
}

impl LayerCalibration {
    /// Thresholds of `score`.
    pub fn thresholds(&self, score: Score) -> &[f32] {
        match score {
            Score::Act => &self.thr_act,
            Score::Product => &self.thr_prod,
            Score::UpWeighted => &self.thr_upw,
            Score::ActWeighted => &self.thr_actw,
            Score::Auto => &[],
        }
    }

    pub fn n_dead(&self) -> usize {
        self.dead.iter().filter(|&&d| d).count()
    }
}

/// A neuron-major copy of one layer's `ffn_down`: row `j` is neuron `j`'s output column.
#[derive(Clone, Debug, PartialEq)]
pub struct DownCopy {
    pub ty: GgmlType,
    /// `n_ff` rows of `n_embd` weights.
    pub data: Vec<u8>,
}

/// One entry of the quality budget table: the setting that skipped the most FFN bytes
/// within `max_ppl_increase_pct` on calibration's held-out slice.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetEntry {
    pub max_ppl_increase_pct: f32,
    /// A `--sparsity` mode string (never itself `budget:`).
    pub mode: String,
    /// The perplexity increase it measured, percent.
    pub measured_ppl_increase_pct: f32,
    /// The 95% confidence interval of that measurement (paired per-token standard error),
    /// percent. Stored as `ghost.budget.measured_ppl_{lo,hi}_pct`; `None` in sidecars written
    /// before those keys existed.
    pub measured_ppl_ci95_pct: Option<(f32, f32)>,
    /// The share of FFN weight bytes it skipped per token.
    pub bytes_skipped: f32,
    /// Per-layer cascade levels `(skip_all, skip_down)` when the setting was allocated layer
    /// by layer (see [`super::allocate`]); `mode` is then a cascade naming the first-stage
    /// score (its two shares are the layer means, for display). `None`: `mode` applies
    /// uniformly. Stored as `ghost.budget.N.layer_skip_{all,down}`; sidecars written before
    /// these keys existed load with `None`.
    pub layer_levels: Option<Vec<(f32, f32)>>,
}

impl BudgetEntry {
    /// The mode text, marked `per-layer` when the entry carries per-layer levels.
    pub fn describe(&self) -> String {
        match &self.layer_levels {
            Some(_) => format!("{} per-layer", self.mode),
            None => self.mode.clone(),
        }
    }
}

/// The whole sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Sidecar {
    /// Hex SHA-256 of the model tensors this calibration belongs to.
    pub model_checksum: String,
    pub arch: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub calib_tokens: u64,
    pub eps: f32,
    /// A description of the calibration corpus (file name).
    pub corpus: String,
    /// Target sparsities the threshold vectors are indexed by (ascending).
    pub targets: Vec<f32>,
    pub layers: Vec<LayerCalibration>,
    pub budget: Vec<BudgetEntry>,
    /// Per layer, when the sidecar carries the neuron-major down copy.
    pub down_copies: Option<Vec<DownCopy>>,
}

/// SHA-256 (hex) over the architecture name and every `blk.*.ffn_{gate,up,down}.weight`
/// tensor: name, type, shape and bytes, in file order.
pub fn model_checksum(model: &GgufFile) -> String {
    let mut h = Sha256::new();
    h.update(model.architecture().unwrap_or("").as_bytes());
    h.update([0u8]);
    for info in model.tensors() {
        let n = &info.name;
        let is_ffn = n.starts_with("blk.")
            && (n.ends_with(".ffn_gate.weight")
                || n.ends_with(".ffn_up.weight")
                || n.ends_with(".ffn_down.weight"));
        if !is_ffn {
            continue;
        }
        h.update(n.as_bytes());
        h.update([0u8]);
        h.update(info.ty.id().to_le_bytes());
        for d in &info.dims {
            h.update(d.to_le_bytes());
        }
        h.update(model.tensor_data(info));
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// Interpolated threshold for sparsity `s` from a vector indexed by `targets`.
/// Below the first target: linear towards 0 at s = 0; above the last: the last value.
pub fn interpolate_threshold(targets: &[f32], thr: &[f32], s: f32) -> f32 {
    if targets.is_empty() || thr.len() != targets.len() || s <= 0.0 {
        return 0.0;
    }
    if s <= targets[0] {
        return thr[0] * s / targets[0];
    }
    for i in 1..targets.len() {
        if s <= targets[i] {
            let f = (s - targets[i - 1]) / (targets[i] - targets[i - 1]);
            return thr[i - 1] + f * (thr[i] - thr[i - 1]);
        }
    }
    thr[thr.len() - 1]
}

/// Validate a budget entry's per-layer levels: one pair per layer, shares in `[0, 1)`,
/// `skip_down ≥ skip_all`, and a cascade `mode`.
fn check_layer_levels(
    all: &[f32],
    down: &[f32],
    n_layer: usize,
    mode: &str,
) -> std::result::Result<Vec<(f32, f32)>, String> {
    if all.len() != n_layer || down.len() != n_layer {
        return Err(format!(
            "budget {mode:?}: {} / {} layer levels for {n_layer} layers",
            all.len(),
            down.len()
        ));
    }
    let is_cascade = matches!(
        mode.parse::<super::mode::SparsityMode>().map(|m| m.rule),
        Ok(Some(super::mode::Rule::Cascade { .. }))
    );
    if !is_cascade {
        return Err(format!(
            "budget {mode:?} has per-layer levels but is not a cascade"
        ));
    }
    let share = 0.0..1.0;
    all.iter()
        .zip(down)
        .enumerate()
        .map(|(il, (&a, &d))| {
            if share.contains(&a) && share.contains(&d) && d >= a {
                Ok((a, d))
            } else {
                Err(format!(
                    "budget {mode:?}: layer {il} levels ({a}, {d}) are not shares with down ≥ first stage"
                ))
            }
        })
        .collect()
}

impl Sidecar {
    /// Build from calibration statistics of `model`.
    pub fn from_stats(model: &GgufFile, stats: &CalibrationStats, corpus: &str) -> Result<Self> {
        let first = stats
            .layers
            .first()
            .ok_or_else(|| Error::InvalidArgument("calibration has no layers".into()))?;
        let targets = TARGETS.to_vec();
        let layers = stats
            .layers
            .iter()
            .map(|l| {
                let n = l.n_tokens.max(1) as f32;
                LayerCalibration {
                    freq_act: l.fires_act.iter().map(|&c| c as f32 / n).collect(),
                    freq_prod: l.fires_prod.iter().map(|&c| c as f32 / n).collect(),
                    mean_abs_act: l.mean_abs_act(),
                    mean_abs_up: l.mean_abs_up(),
                    max_abs_act: l.max_abs_act.clone(),
                    max_abs_prod: l.max_abs_prod.clone(),
                    hist_act: l.hist_act.clone(),
                    hist_prod: l.hist_prod.clone(),
                    hist_input: l.hist_input.clone(),
                    thr_act: l.thresholds(Score::Act, &targets),
                    thr_prod: l.thresholds(Score::Product, &targets),
                    thr_upw: l.thresholds(Score::UpWeighted, &targets),
                    thr_actw: l.thresholds(Score::ActWeighted, &targets),
                    loss_upw: l.first_stage_loss(Score::UpWeighted, &targets),
                    loss_actw: l.first_stage_loss(Score::ActWeighted, &targets),
                    thr_input: l.input_thresholds(&targets),
                    dead: l.dead_mask(),
                    hot_order: l.hot_order(),
                }
            })
            .collect();
        Ok(Sidecar {
            model_checksum: model_checksum(model),
            arch: model.architecture().unwrap_or("").to_string(),
            n_layer: stats.layers.len(),
            n_embd: first.n_embd,
            n_ff: first.n_ff,
            calib_tokens: stats.n_tokens(),
            eps: stats.eps,
            corpus: corpus.to_string(),
            targets,
            layers,
            budget: Vec::new(),
            down_copies: None,
        })
    }

    /// Share of all neurons that are dead.
    pub fn dead_fraction(&self) -> f64 {
        let dead: usize = self.layers.iter().map(|l| l.n_dead()).sum();
        dead as f64 / (self.n_layer * self.n_ff).max(1) as f64
    }

    /// The budget entry for an accepted increase of `pct` percent: the largest stored budget
    /// not above it.
    pub fn budget_for(&self, pct: f32) -> Option<&BudgetEntry> {
        self.budget
            .iter()
            .filter(|b| b.max_ppl_increase_pct <= pct + 1e-6)
            .max_by(|a, b| a.max_ppl_increase_pct.total_cmp(&b.max_ppl_increase_pct))
    }

    /// Serialize into a GGUF writer (borrows the down copies).
    pub fn to_writer(&self) -> Result<GgufWriter<'_>> {
        let mut w = GgufWriter::new();
        w.set_str("general.type", SIDECAR_TYPE);
        w.set_u32("ghost.sidecar.version", SIDECAR_VERSION);
        w.set_str("ghost.model.checksum", &self.model_checksum);
        w.set_str("ghost.model.arch", &self.arch);
        w.set("ghost.n_layer", Value::U64(self.n_layer as u64));
        w.set("ghost.n_embd", Value::U64(self.n_embd as u64));
        w.set("ghost.n_ff", Value::U64(self.n_ff as u64));
        w.set("ghost.calib.n_tokens", Value::U64(self.calib_tokens));
        w.set_f32("ghost.calib.eps", self.eps);
        w.set_str("ghost.calib.corpus", &self.corpus);
        w.set(
            "ghost.targets",
            Value::Array(Array::F32(self.targets.clone())),
        );
        w.set(
            "ghost.budget.max_ppl_pct",
            Value::Array(Array::F32(
                self.budget.iter().map(|b| b.max_ppl_increase_pct).collect(),
            )),
        );
        w.set(
            "ghost.budget.mode",
            Value::Array(Array::String(
                self.budget.iter().map(|b| b.mode.clone()).collect(),
            )),
        );
        w.set(
            "ghost.budget.measured_ppl_pct",
            Value::Array(Array::F32(
                self.budget
                    .iter()
                    .map(|b| b.measured_ppl_increase_pct)
                    .collect(),
            )),
        );
        if self
            .budget
            .iter()
            .all(|b| b.measured_ppl_ci95_pct.is_some())
        {
            for (key, pick) in [
                ("ghost.budget.measured_ppl_lo_pct", 0),
                ("ghost.budget.measured_ppl_hi_pct", 1),
            ] {
                let v = self.budget.iter().filter_map(|b| b.measured_ppl_ci95_pct);
                let v = v.map(|(lo, hi)| if pick == 0 { lo } else { hi });
                w.set(key, Value::Array(Array::F32(v.collect())));
            }
        }
        w.set(
            "ghost.budget.bytes_skipped",
            Value::Array(Array::F32(
                self.budget.iter().map(|b| b.bytes_skipped).collect(),
            )),
        );
        for (i, b) in self.budget.iter().enumerate() {
            if let Some(levels) = &b.layer_levels {
                if levels.len() != self.n_layer {
                    bail!(
                        Internal,
                        "budget entry {i}: {} layer levels for {} layers",
                        levels.len(),
                        self.n_layer
                    );
                }
                w.set(
                    format!("ghost.budget.{i}.layer_skip_all"),
                    Value::Array(Array::F32(levels.iter().map(|l| l.0).collect())),
                );
                w.set(
                    format!("ghost.budget.{i}.layer_skip_down"),
                    Value::Array(Array::F32(levels.iter().map(|l| l.1).collect())),
                );
            }
        }
        let n_ff = self.n_ff as u64;
        let n_t = self.targets.len() as u64;
        for (i, l) in self.layers.iter().enumerate() {
            for (k, h) in [
                ("act", &l.hist_act),
                ("prod", &l.hist_prod),
                ("input", &l.hist_input),
            ] {
                w.set(
                    format!("ghost.blk.{i}.hist_{k}"),
                    Value::Array(Array::U64(h.counts().to_vec())),
                );
            }
            let f32s: [(&str, &Vec<f32>, u64); 13] = [
                ("freq_act", &l.freq_act, n_ff),
                ("freq_prod", &l.freq_prod, n_ff),
                ("mean_abs_act", &l.mean_abs_act, n_ff),
                ("mean_abs_up", &l.mean_abs_up, n_ff),
                ("max_abs_act", &l.max_abs_act, n_ff),
                ("max_abs_prod", &l.max_abs_prod, n_ff),
                ("thr_act", &l.thr_act, n_t),
                ("thr_prod", &l.thr_prod, n_t),
                ("thr_upw", &l.thr_upw, n_t),
                ("thr_actw", &l.thr_actw, n_t),
                ("loss_upw", &l.loss_upw, n_t),
                ("loss_actw", &l.loss_actw, n_t),
                ("thr_input", &l.thr_input, n_t),
            ];
            for (k, v, len) in f32s {
                // A sidecar loaded from a file older than the up-first score has none of its
                // thresholds; it is written back without them.
                if UP_FIRST_KEYS.contains(&k) && v.is_empty() {
                    continue;
                }
                if v.len() as u64 != len {
                    bail!(
                        Internal,
                        "layer {i} {k}: {} values, expected {len}",
                        v.len()
                    );
                }
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.add_tensor(
                    format!("blk.{i}.sparsity.{k}"),
                    GgmlType::F32,
                    &[len],
                    bytes,
                )?;
            }
            let dead: Vec<u8> = l.dead.iter().map(|&d| d as u8).collect();
            w.add_tensor(
                format!("blk.{i}.sparsity.dead"),
                GgmlType::I8,
                &[n_ff],
                dead,
            )?;
            let order: Vec<u8> = l.hot_order.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.add_tensor(
                format!("blk.{i}.sparsity.hot_order"),
                GgmlType::I32,
                &[n_ff],
                order,
            )?;
            if let Some(copies) = &self.down_copies {
                let c = copies
                    .get(i)
                    .ok_or_else(|| Error::Internal(format!("down copy missing for layer {i}")))?;
                w.add_tensor(
                    format!("blk.{i}.ffn_down_t"),
                    c.ty,
                    &[self.n_embd as u64, n_ff],
                    c.data.as_slice(),
                )?;
            }
        }
        Ok(w)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.to_writer()?.to_bytes())
    }

    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_writer()?.write_file(path)?;
        Ok(())
    }

    /// Open a sidecar and check that it belongs to `model`.
    pub fn load(path: impl AsRef<Path>, model: &GgufFile) -> Result<Self> {
        let file = GgufFile::open(path.as_ref())?;
        let s = Self::from_gguf(&file)?;
        s.check_model(model)?;
        Ok(s)
    }

    /// Refuse a model whose FFN tensors differ from the calibrated one.
    pub fn check_model(&self, model: &GgufFile) -> Result<()> {
        let sum = model_checksum(model);
        if sum != self.model_checksum {
            bail!(
                InvalidArgument,
                "sparsity sidecar belongs to another model (its checksum {}…, this model {}…, arch {:?} vs {:?}); recalibrate with `ghost calibrate`",
                &self.model_checksum[..self.model_checksum.len().min(12)],
                &sum[..12],
                self.arch,
                model.architecture().unwrap_or("")
            );
        }
        Ok(())
    }

    /// Parse a sidecar without checking which model it belongs to.
    pub fn from_gguf(file: &Arc<GgufFile>) -> Result<Self> {
        let bad = |what: String| Error::Format(format!("sparsity sidecar: {what}"));
        match file.get_str("general.type") {
            Some(SIDECAR_TYPE) => {}
            other => {
                return Err(bad(format!(
                    "general.type is {other:?}, not {SIDECAR_TYPE:?} (is this a sidecar?)"
                )))
            }
        }
        let version = file.get_u64("ghost.sidecar.version").unwrap_or(0);
        if version != SIDECAR_VERSION as u64 {
            return Err(bad(format!(
                "version {version}, this engine reads {SIDECAR_VERSION}"
            )));
        }
        let get_str = |k: &str| {
            file.get_str(k)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("missing {k}")))
        };
        let get_u64 = |k: &str| file.get_u64(k).ok_or_else(|| bad(format!("missing {k}")));
        let f32_arr = |k: &str| {
            file.get_array(k)
                .and_then(Array::to_f32_vec)
                .ok_or_else(|| bad(format!("missing or non-float array {k}")))
        };
        let model_checksum = get_str("ghost.model.checksum")?;
        let arch = get_str("ghost.model.arch")?;
        let n_layer = get_u64("ghost.n_layer")? as usize;
        let n_embd = get_u64("ghost.n_embd")? as usize;
        let n_ff = get_u64("ghost.n_ff")? as usize;
        if n_layer == 0 || n_embd == 0 || n_ff == 0 || n_layer > 4096 || n_ff > (1 << 24) {
            return Err(bad(format!(
                "implausible shape n_layer={n_layer} n_embd={n_embd} n_ff={n_ff}"
            )));
        }
        let calib_tokens = get_u64("ghost.calib.n_tokens")?;
        let eps = file
            .get_f64("ghost.calib.eps")
            .ok_or_else(|| bad("missing ghost.calib.eps".into()))? as f32;
        let corpus = get_str("ghost.calib.corpus")?;
        let targets = f32_arr("ghost.targets")?;
        if targets.is_empty() || targets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("ghost.targets is empty or not ascending".into()));
        }

        let b_pct = f32_arr("ghost.budget.max_ppl_pct")?;
        let b_meas = f32_arr("ghost.budget.measured_ppl_pct")?;
        let b_bytes = f32_arr("ghost.budget.bytes_skipped")?;
        let b_mode = match file.get_array("ghost.budget.mode") {
            Some(Array::String(v)) => v.clone(),
            _ => return Err(bad("missing ghost.budget.mode".into())),
        };
        if [b_meas.len(), b_bytes.len(), b_mode.len()]
            .iter()
            .any(|&n| n != b_pct.len())
        {
            return Err(bad("budget arrays differ in length".into()));
        }
        let b_ci = match (
            file.get_array("ghost.budget.measured_ppl_lo_pct"),
            file.get_array("ghost.budget.measured_ppl_hi_pct"),
        ) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                let (lo, hi) = (
                    f32_arr("ghost.budget.measured_ppl_lo_pct")?,
                    f32_arr("ghost.budget.measured_ppl_hi_pct")?,
                );
                if lo.len() != b_pct.len() || hi.len() != b_pct.len() {
                    return Err(bad("budget interval arrays differ in length".into()));
                }
                Some((lo, hi))
            }
            _ => {
                return Err(bad(
                    "only one of ghost.budget.measured_ppl_lo_pct and _hi_pct".into(),
                ))
            }
        };
        let mut budget = Vec::with_capacity(b_pct.len());
        for i in 0..b_pct.len() {
            let key_all = format!("ghost.budget.{i}.layer_skip_all");
            let key_down = format!("ghost.budget.{i}.layer_skip_down");
            let layer_levels = match (file.get_array(&key_all), file.get_array(&key_down)) {
                (None, None) => None,
                (Some(_), Some(_)) => {
                    let all = f32_arr(&key_all)?;
                    let down = f32_arr(&key_down)?;
                    Some(check_layer_levels(&all, &down, n_layer, &b_mode[i]).map_err(bad)?)
                }
                _ => {
                    return Err(bad(format!(
                        "budget entry {i} has only one of {key_all} and {key_down}"
                    )))
                }
            };
            budget.push(BudgetEntry {
                max_ppl_increase_pct: b_pct[i],
                mode: b_mode[i].clone(),
                measured_ppl_increase_pct: b_meas[i],
                measured_ppl_ci95_pct: b_ci.as_ref().map(|(lo, hi)| (lo[i], hi[i])),
                bytes_skipped: b_bytes[i],
                layer_levels,
            });
        }

        let tensor = |name: &str, ty: GgmlType, len: usize| -> Result<&[u8]> {
            let (info, data) = file
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            if info.ty != ty || info.dims != [len as u64] {
                return Err(bad(format!(
                    "tensor {name} is {} {:?}, expected {ty} [{len}]",
                    info.ty, info.dims
                )));
            }
            Ok(data)
        };
        let f32_tensor = |name: &str, len: usize| -> Result<Vec<f32>> {
            let data = tensor(name, GgmlType::F32, len)?;
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("tensor {name} holds non-finite values")));
            }
            Ok(v)
        };
        let hist = |k: String| -> Result<LogHistogram> {
            let counts = file
                .get_array(&k)
                .and_then(Array::to_i64_vec)
                .ok_or_else(|| bad(format!("missing {k}")))?;
            if counts.iter().any(|&c| c < 0) {
                return Err(bad(format!("{k} has negative counts")));
            }
            LogHistogram::from_counts(counts.into_iter().map(|c| c as u64).collect())
                .ok_or_else(|| bad(format!("{k} has the wrong number of bins")))
        };

        let n_t = targets.len();
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = |k: &str| format!("blk.{i}.sparsity.{k}");
            let dead_bytes = tensor(&p("dead"), GgmlType::I8, n_ff)?;
            if dead_bytes.iter().any(|&b| b > 1) {
                return Err(bad(format!("{} holds values other than 0/1", p("dead"))));
            }
            let order: Vec<u32> = tensor(&p("hot_order"), GgmlType::I32, n_ff)?
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut seen = vec![false; n_ff];
            for &o in &order {
                match seen.get_mut(o as usize) {
                    Some(s) if !*s => *s = true,
                    _ => return Err(bad(format!("{} is not a permutation", p("hot_order")))),
                }
            }
            let thr = |k: &str| -> Result<Vec<f32>> {
                let v = f32_tensor(&p(k), n_t)?;
                if v.iter().any(|&x| x < 0.0) {
                    return Err(bad(format!("{} has negative thresholds", p(k))));
                }
                Ok(v)
            };
            let optional = |k: &str| -> Result<Vec<f32>> {
                match file.tensor_info(&p(k)) {
                    Some(_) => thr(k),
                    None => Ok(Vec::new()),
                }
            };
            layers.push(LayerCalibration {
                freq_act: f32_tensor(&p("freq_act"), n_ff)?,
                freq_prod: f32_tensor(&p("freq_prod"), n_ff)?,
                mean_abs_act: f32_tensor(&p("mean_abs_act"), n_ff)?,
                mean_abs_up: f32_tensor(&p("mean_abs_up"), n_ff)?,
                max_abs_act: f32_tensor(&p("max_abs_act"), n_ff)?,
                max_abs_prod: f32_tensor(&p("max_abs_prod"), n_ff)?,
                hist_act: hist(format!("ghost.blk.{i}.hist_act"))?,
                hist_prod: hist(format!("ghost.blk.{i}.hist_prod"))?,
                hist_input: hist(format!("ghost.blk.{i}.hist_input"))?,
                thr_act: thr("thr_act")?,
                thr_prod: thr("thr_prod")?,
                thr_upw: thr("thr_upw")?,
                // Optional: sidecars from before the up-first score lack these.
                thr_actw: optional("thr_actw")?,
                loss_upw: optional("loss_upw")?,
                loss_actw: optional("loss_actw")?,
                thr_input: thr("thr_input")?,
                dead: dead_bytes.iter().map(|&b| b == 1).collect(),
                hot_order: order,
            });
        }

        let has_copy = file.tensor_info("blk.0.ffn_down_t").is_some();
        let down_copies = if has_copy {
            let mut v = Vec::with_capacity(n_layer);
            for i in 0..n_layer {
                let name = format!("blk.{i}.ffn_down_t");
                let (info, data) = file
                    .tensor(&name)
                    .map_err(|_| bad(format!("missing tensor {name}")))?;
                if info.dims != [n_embd as u64, n_ff as u64] {
                    return Err(bad(format!(
                        "{name} has shape {:?}, expected [{n_embd}, {n_ff}]",
                        info.dims
                    )));
                }
                v.push(DownCopy {
                    ty: info.ty,
                    data: data.to_vec(),
                });
            }
            Some(v)
        } else {
            None
        };

        Ok(Sidecar {
            model_checksum,
            arch,
            n_layer,
            n_embd,
            n_ff,
            calib_tokens,
            eps,
            corpus,
            targets,
            layers,
            budget,
            down_copies,
        })
    }
}
