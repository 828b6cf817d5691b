//! Activation sparsity: calibration statistics, the sidecar file, the `--sparsity` modes,
//! per-layer plans and the row-packed sparse FFN kernel.
//!
//! - [`mode`]: parsing `--sparsity` values (`dead`, `gate:T`, `target:S[:score]`,
//!   `cascade:S1:S2`, `stat:K`, `input:S` (combinable with the others), `budget:P`).
//! - [`histogram`], [`stats`]: what calibration records and how thresholds are derived.
//! - [`sidecar`]: the GGUF sidecar (`MODEL.ghost`) and the model checksum it is bound to.
//! - [`repack`]: the neuron-major copy of `ffn_down` and its requantization error;
//!   [`exact_down`]: the exact (not requantized) neuron-major copies of Q4_K and Q6_K `ffn_down`s;
//!   [`input_major`]: the exact input-major copy of a Q5_0 `ffn_gate`/`ffn_up`, whose matvec
//!   skips the columns of zeroed input entries (`input:S`).
//! - [`rows`], [`ffn`]: row-level weight access and the sparse FFN step.
//! - [`plan`]: mode + sidecar → per-layer plans; tallies of what was skipped.
//! - [`engine`]: installing the sparse (or calibrating) FFN into a [`crate::context::Context`];
//!   [`accelerated`]: the same plans as device rules for a GPU context.
//! - [`eval`]: perplexity and KL to the dense path; [`calibrate`]: the calibration run;
//!   [`allocate`]: per-layer sensitivity and the per-layer allocation of the byte budget.
//! - [`report`]: sweep tables (CSV, Markdown) and the SVG plot.

pub mod accelerated;
pub mod allocate;
pub mod calibrate;
pub mod engine;
pub mod eval;
pub mod exact_down;
pub mod ffn;
pub mod histogram;
pub mod input_major;
pub mod mode;
pub mod path_costs;
pub mod plan;
pub mod repack;
pub mod report;
pub mod rows;
pub mod sidecar;
pub mod stats;

pub use ffn::{
    sparse_ffn, Activation, DownPath, FfnScratch, FfnStepStats, FfnWeights, LayerPlan, LayerRule,
    PathPolicy,
};
pub use mode::{Rule, Score, SparsityMode};
pub use plan::{resolve_plans, LayerTally, SparsityTally};
pub use rows::{QMatrix, Serial, Splitter};
pub use sidecar::{model_checksum, BudgetEntry, DownCopy, LayerCalibration, Sidecar};
pub use stats::{CalibrationStats, LayerStats, TARGETS};
