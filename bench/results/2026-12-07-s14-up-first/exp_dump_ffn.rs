//! Experiment (session 14, not part of the product): dump act(gate·x) and up·x of a few layers
//! for every token of a text, to study predictors of up·x offline.
//! `exp_dump_ffn MODEL TEXT OUT_PREFIX MAX_TOKENS`
use std::io::Write;
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::ffn::FfnObserver;
use ghostcore::model::{Model, ModelParams};

const LAYERS: [usize; 5] = [2, 8, 14, 20, 26];

struct Dump {
    files: Vec<std::fs::File>,
}
impl FfnObserver for Dump {
    fn observe(&mut self, layer: usize, _pos: usize, act: &[f32], up: &[f32]) {
        if let Some(k) = LAYERS.iter().position(|&l| l == layer) {
            let f = &mut self.files[k];
            for v in act.iter().chain(up) {
                f.write_all(&v.to_le_bytes()).unwrap();
            }
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = Model::load(&a[1], &ModelParams::default()).unwrap();
    let text = std::fs::read_to_string(&a[2]).unwrap();
    let max: usize = a[4].parse().unwrap();
    let toks = model.tokenizer().unwrap().encode(&text, true, false).unwrap();
    let toks = &toks[..toks.len().min(max)];
    let files = LAYERS
        .iter()
        .map(|l| std::fs::File::create(format!("{}-L{l}.f32", a[3])).unwrap())
        .collect();
    let mut ctx = Context::new(
        model,
        ContextParams { n_ctx: 512, n_batch: 512, n_threads: 2, ..Default::default() },
    )
    .unwrap();
    ctx.set_ffn_observer(Some(Box::new(Dump { files }))).unwrap();
    for c in toks.chunks(512) {
        ctx.reset();
        ctx.decode(c).unwrap();
    }
    eprintln!("{} tokens", toks.len());
}
