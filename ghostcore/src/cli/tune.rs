//! `ghost tune -m MODEL`: measure this CPU's sparse path costs at the model's FFN shape (the
//! time curves decode chooses its sparse kernels by, see `sparsity::path_costs`), print them
//! beside the built-in ones and cache them; `ghost run/chat/bench/sweep/perplexity` and the C
//! ABI then use them on this machine (`GHOST_PATH_COSTS=builtin` not to). Compare with the
//! built-in curves on decode speed (`bench/sparsity/tuned_vs_builtin.sh`) before keeping
//! them; `--force` measures again (on a quiet machine: other cores' memory traffic moves
//! the curves).

use std::path::PathBuf;

use crate::model::{Model, ModelParams};
use crate::sparsity::path_costs::cache::{load_or_measure, Source};
use crate::sparsity::path_costs::measure::{FfnShape, MeasureOptions};
use crate::sparsity::path_costs::{PathCosts, TimeCurve};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: the built-in SmolLM2-135M Q4_K_M).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Measure even when this CPU's curves for the shape are cached.
    #[arg(long)]
    pub force: bool,
    /// Alternated (dense, sparse) pairs per point.
    #[arg(long, default_value_t = MeasureOptions::default().reps)]
    pub reps: usize,
}

pub fn run(args: Args) -> Result<()> {
    let path = super::run::resolve_model(args.model.as_deref())?;
    // Only the FFN's shape and types are needed: models without a vocabulary do too.
    let params = ModelParams {
        skip_tokenizer: true,
        ..ModelParams::default()
    };
    let model = Model::load(&path, &params)?;
    let shape = FfnShape::of_model(&model);
    let opts = MeasureOptions {
        reps: args.reps.max(1),
        ..MeasureOptions::default()
    };
    let t = std::time::Instant::now();
    let (costs, source) = load_or_measure(&shape, &opts, args.force, &mut |what| {
        eprintln!("ghost: measuring {what}")
    })?;
    println!(
        "FFN {}×{}, rows {}, exact downs {:?}",
        shape.n_ff, shape.n_embd, shape.rows_type, shape.exact_down_types
    );
    match &source {
        Source::Cached(p) => println!("cached: {}", p.display()),
        Source::Measured(p) => println!(
            "measured in {:.1} s{}",
            t.elapsed().as_secs_f64(),
            p.as_ref()
                .map(|p| format!(", saved to {}", p.display()))
                .unwrap_or_default()
        ),
        Source::Builtin(why) => println!("built-in curves: {why}"),
    }
    let builtin = PathCosts::builtin(shape.n_embd);
    println!("(share of the dense bytes read → time relative to the dense kernel)");
    let print = |name: &str, c: &TimeCurve, b: &TimeCurve| {
        let pts: Vec<String> = c.points()[1..]
            .iter()
            .map(|(x, y)| format!("{x:.2}→{y:.2} (built-in {:.2})", b.at(*x)))
            .collect();
        println!("{name:<16} {}", pts.join("  "));
    };
    print(
        "gathered rows",
        &costs.gathered_rows,
        &builtin.gathered_rows,
    );
    for &ty in &shape.exact_down_types {
        if let (Some(c), Some(b)) = (costs.exact_down_curve(ty), builtin.exact_down_curve(ty)) {
            print(&format!("exact {} down", ty.name().to_uppercase()), c, b);
        }
    }
    Ok(())
}
