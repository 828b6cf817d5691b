//! Activation sparsity: calibration statistics, the sidecar file, the `--sparsity` modes,
//! per-layer plans and the row-packed sparse FFN kernel.
//!
//! - [`mode`]: parsing `--sparsity` values.
//! - [`histogram`], [`stats`]: what calibration records and how thresholds are derived.
//! - [`sidecar`]: the GGUF sidecar (`MODEL.ghost`) and the model checksum it is bound to.
//! - [`rows`], [`ffn`]: row-level weight access and the sparse FFN step.

pub mod calibrate;
pub mod engine;
pub mod eval;
pub mod ffn;
pub mod histogram;
pub mod mode;
pub mod plan;
pub mod repack;
pub mod report;
pub mod rows;
pub mod sidecar;
pub mod stats;

pub use ffn::{
    sparse_ffn, Activation, DownPath, FfnScratch, FfnStepStats, FfnWeights, LayerPlan, LayerRule,
};
pub use mode::{Rule, Score, SparsityMode};
pub use plan::{resolve_plans, LayerTally, SparsityTally};
pub use rows::{QMatrix, Serial, Splitter};
pub use sidecar::{model_checksum, BudgetEntry, DownCopy, LayerCalibration, Sidecar};
pub use stats::{CalibrationStats, LayerStats, TARGETS};
