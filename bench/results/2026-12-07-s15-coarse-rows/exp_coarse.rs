use ghostcore::model::{Model, ModelParams};
use ghostcore::quant::GgmlType;
use ghostcore::sparsity::engine::build_down_copies;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let m = Model::load(&p, &ModelParams::default()).unwrap();
    for il in 0..m.config().n_layer {
        print!("{}:{} ", il, m.layer(il).ffn_down.ty);
    }
    println!();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
    ] {
        match build_down_copies(&m, Some(ty)) {
            Ok((_, e)) => println!("{ty}: worst rel_rmse {e:.4}"),
            Err(e) => println!("{ty}: {e}"),
        }
    }
}
