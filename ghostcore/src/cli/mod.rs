//! Subcommands of the `ghost` tool, one module each.

pub mod bench;
pub mod calibrate;
pub mod chat;
pub mod inspect;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod sparsity_setup;
pub mod sweep;
pub mod synth;
pub mod tokenize;
