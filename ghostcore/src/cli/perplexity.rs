//! `ghost perplexity` (not implemented yet).

use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Arguments (this subcommand is not implemented yet).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(_args: Args) -> Result<()> {
    Err(Error::Unsupported(
        "`ghost perplexity` is not implemented yet".into(),
    ))
}
