//! `ghost inspect FILE`: metadata (long arrays abbreviated) and the tensor table.

use std::io::Write;
use std::path::PathBuf;

use crate::gguf::GgufFile;
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF file (a model or a GhostCore sidecar).
    pub file: PathBuf,
    /// Print only the metadata.
    #[arg(long)]
    pub no_tensors: bool,
}

pub fn run(args: Args) -> Result<()> {
    let g = GgufFile::open(&args.file)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    write_report(&g, !args.no_tensors, &mut out)?;
    Ok(())
}

/// Render the inspection report (metadata, then the tensor table) to `out`.
pub fn write_report(g: &GgufFile, tensors: bool, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "GGUF v{}  {} metadata keys  {} tensors  alignment {}  data at byte {}",
        g.version,
        g.metadata().len(),
        g.tensors().len(),
        g.alignment,
        g.data_offset
    )?;
    writeln!(out, "\nmetadata:")?;
    let width = g.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in g.metadata() {
        writeln!(out, "  {k:<width$}  {v}")?;
    }
    if tensors {
        writeln!(out, "\ntensors:")?;
        let nw = g
            .tensors()
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            out,
            "  {:<nw$}  {:<7}  {:<22}  {:>12}  {:>12}",
            "name", "type", "shape", "bytes", "offset"
        )?;
        let mut total = 0u64;
        for t in g.tensors() {
            let shape = format!("{:?}", t.dims);
            writeln!(
                out,
                "  {:<nw$}  {:<7}  {:<22}  {:>12}  {:>12}",
                t.name,
                t.ty.name(),
                shape,
                t.size,
                g.data_offset + t.offset
            )?;
            total += t.size;
        }
        writeln!(out, "\n  total tensor bytes: {total}")?;
    }
    Ok(())
}
