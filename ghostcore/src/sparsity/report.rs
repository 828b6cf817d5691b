//! Sweep results as CSV, a Markdown table and an SVG plot (written by hand: two scatter
//! panels need no plotting crate), and the byte bound a decode speed-up is judged against.

use std::fmt::Write as _;

use crate::model::Model;

/// The weight bytes one decode step reads: `(FFN gate, up and down, everything)`. The token
/// embedding counts as one row (a lookup), unless it is also the output head (tied
/// embeddings), which reads it whole.
pub fn decode_weight_bytes(model: &Model) -> (usize, usize) {
    let w = model.weights();
    let mut ffn = 0;
    let mut rest = w.output.len + w.output_norm.len;
    if !w.tied_embeddings {
        rest += w.token_embd.row_bytes();
    }
    for l in &w.layers {
        ffn += l.ffn_gate.len + l.ffn_up.len + l.ffn_down.len;
        rest += [l.attn_norm, l.wq, l.wk, l.wv, l.wo, l.ffn_norm]
            .iter()
            .map(|x| x.len)
            .sum::<usize>();
        rest += [
            l.bq,
            l.bk,
            l.bv,
            l.q_norm,
            l.k_norm,
            l.post_attn_norm,
            l.post_ffn_norm,
        ]
        .iter()
        .flatten()
        .map(|x| x.len)
        .sum::<usize>();
    }
    (ffn, ffn + rest)
}

/// The FFN's share of the weight bytes one decode step reads ([`decode_weight_bytes`]).
pub fn decode_ffn_share(model: &Model) -> f64 {
    let (ffn, all) = decode_weight_bytes(model);
    ffn as f64 / all.max(1) as f64
}

/// The decode speed-up that skipping `ffn_bytes_skipped` of the FFN's weight bytes allows when
/// the FFN is `ffn_share` of the weight bytes a step reads and time follows bytes read:
/// `1 / (1 − ffn_share · ffn_bytes_skipped)` (issue 7's yardstick: a sparse decode should
/// reach at least 85% of it).
pub fn byte_bound(ffn_share: f64, ffn_bytes_skipped: f64) -> f64 {
    1.0 / (1.0 - ffn_share * ffn_bytes_skipped).max(f64::MIN_POSITIVE)
}

/// One measured setting.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// The `--sparsity` mode string.
    pub mode: String,
    /// Mode family used to group series in the plot (`gate`, `target-act`, ...).
    pub family: String,
    /// Share of neurons whose down row was skipped.
    pub sparsity: f64,
    /// Share of FFN weight bytes not read per token.
    pub bytes_skipped: f64,
    pub ppl: f64,
    /// Perplexity increase over dense, percent.
    pub dppl_pct: f64,
    /// Its 95% confidence interval (paired per-token standard error), percent.
    pub dppl_lo_pct: f64,
    pub dppl_hi_pct: f64,
    /// Mean KL(dense ‖ sparse) per scored token, nats.
    pub kl: f64,
    /// Decode tokens/s of this setting, and of dense in the same run (when measured).
    pub tok_s: Option<f64>,
    pub dense_tok_s: Option<f64>,
    /// Decode speed-up over dense as measured in pairs of blocks (median of the pairs'
    /// ratios; more robust to drift than `tok_s / dense_tok_s`), when measured so.
    pub speedup: Option<f64>,
    /// The speed-up the FFN bytes the speed run skipped allow ([`byte_bound`]), when speed
    /// was measured.
    pub byte_bound: Option<f64>,
}

impl SweepRow {
    /// The decode speed-up over dense: the paired measurement, else the ratio of the speeds.
    pub fn speedup(&self) -> Option<f64> {
        self.speedup.or(Some(self.tok_s? / self.dense_tok_s?))
    }
}

pub fn csv(rows: &[SweepRow]) -> String {
    let mut s =
        String::from("mode,family,sparsity,ffn_bytes_skipped,ppl,dppl_pct,dppl_lo_pct,dppl_hi_pct,kl,tok_s,dense_tok_s,speedup,byte_bound\n");
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.4},{:.4},{:.4},{:.3},{:.3},{:.3},{:.5},{},{},{},{}",
            r.mode,
            r.family,
            r.sparsity,
            r.bytes_skipped,
            r.ppl,
            r.dppl_pct,
            r.dppl_lo_pct,
            r.dppl_hi_pct,
            r.kl,
            opt(r.tok_s),
            opt(r.dense_tok_s),
            r.speedup().map(|x| format!("{x:.3}")).unwrap_or_default(),
            r.byte_bound.map(|x| format!("{x:.3}")).unwrap_or_default()
        );
    }
    s
}

pub fn markdown(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| mode | sparsity | FFN bytes skipped | PPL | ΔPPL | ΔPPL 95% CI | KL | tok/s (dense) | speed-up | byte bound (reached) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let speed = match (r.tok_s, r.dense_tok_s) {
            (Some(t), Some(d)) => format!("{t:.1} ({d:.1})"),
            (Some(t), None) => format!("{t:.1}"),
            _ => "–".into(),
        };
        let speedup = r
            .speedup()
            .map(|x| format!("{x:.2}×"))
            .unwrap_or_else(|| "–".into());
        let bound = match (r.byte_bound, r.speedup()) {
            (Some(b), Some(x)) => format!("{b:.2}× ({:.2})", x / b),
            (Some(b), None) => format!("{b:.2}×"),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {:.1}% | {:.1}% | {:.3} | {:+.2}% | {:+.1}% .. {:+.1}% | {:.4} | {} | {} | {} |",
            r.mode,
            100.0 * r.sparsity,
            100.0 * r.bytes_skipped,
            r.ppl,
            r.dppl_pct,
            r.dppl_lo_pct,
            r.dppl_hi_pct,
            r.kl,
            speed,
            speedup,
            bound
        );
    }
    s
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two panels: FFN bytes skipped (x) against ΔPPL % (y, clipped at `max_dppl`), and against
/// decode speed-up over dense (when measured). One colour per mode family.
pub fn svg(rows: &[SweepRow], title: &str, max_dppl: f64) -> String {
    let (w, h) = (960.0, 420.0);
    let (pw, ph) = (380.0, 300.0);
    let panels = [(70.0, 60.0), (550.0, 60.0)];
    let mut families: Vec<&str> = Vec::new();
    for r in rows {
        if !families.contains(&r.family.as_str()) {
            families.push(&r.family);
        }
    }
    let max_x = rows
        .iter()
        .map(|r| r.bytes_skipped * 100.0)
        .fold(10.0f64, f64::max)
        .min(100.0);
    let max_x = (max_x / 10.0).ceil() * 10.0;
    let speedups: Vec<f64> = rows.iter().filter_map(SweepRow::speedup).collect();
    let max_sp = speedups.iter().copied().fold(1.2f64, f64::max);
    let min_sp = speedups.iter().copied().fold(0.8f64, f64::min);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
"#,
        w / 2.0,
        escape(title)
    );
    let ylabels = ["ΔPPL (%)", "decode speed-up vs dense (×)"];
    for (pi, &(x0, y0)) in panels.iter().enumerate() {
        let (ymin, ymax) = if pi == 0 {
            (0.0, max_dppl)
        } else {
            (min_sp, max_sp)
        };
        let px = |x: f64| x0 + x / max_x * pw;
        let py = |y: f64| y0 + ph - (y.clamp(ymin, ymax) - ymin) / (ymax - ymin) * ph;
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        for k in 0..=5 {
            let xv = max_x * k as f64 / 5.0;
            let yv = ymin + (ymax - ymin) * k as f64 / 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4:.0}</text>"##,
                px(xv),
                y0,
                y0 + ph,
                y0 + ph + 15.0,
                xv
            );
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5:.2}</text>"##,
                x0,
                py(yv),
                x0 + pw,
                x0 - 4.0,
                py(yv) + 4.0,
                yv
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">FFN weight bytes skipped per token (%)</text>"#,
            x0 + pw / 2.0,
            y0 + ph + 32.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            x0 - 45.0,
            y0 + ph / 2.0,
            ylabels[pi]
        );
        if pi == 1 {
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{0}" x2="{1}" y2="{0}" stroke="#888" stroke-dasharray="4 3"/>"##,
                py(1.0),
                x0 + pw
            );
        }
        for (fi, fam) in families.iter().enumerate() {
            let color = COLORS[fi % COLORS.len()];
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.family == *fam)
                .filter_map(|r| {
                    let y = if pi == 0 {
                        Some(r.dppl_pct)
                    } else {
                        r.speedup()
                    }?;
                    Some((r.bytes_skipped * 100.0, y))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.len() > 1 {
                let path: Vec<String> = pts
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                    path.join(" ")
                );
            }
            for &(x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
    }
    for (fi, fam) in families.iter().enumerate() {
        let y = 60.0 + 16.0 * fi as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            80.0,
            y + 4.0,
            COLORS[fi % COLORS.len()],
            94.0,
            y + 13.0,
            escape(fam)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, fam: &str, b: f64, d: f64) -> SweepRow {
        SweepRow {
            mode: mode.into(),
            family: fam.into(),
            sparsity: b,
            bytes_skipped: b,
            ppl: 19.0 * (1.0 + d / 100.0),
            dppl_pct: d,
            dppl_lo_pct: d - 0.5,
            dppl_hi_pct: d + 0.5,
            kl: d / 100.0,
            tok_s: Some(100.0 / (1.0 - b / 2.0)),
            dense_tok_s: Some(100.0),
            speedup: None,
            byte_bound: None,
        }
    }

    #[test]
    fn outputs_have_one_line_per_row_and_valid_svg_shape() {
        let rows = vec![
            row("gate:0.05", "gate", 0.1, 0.1),
            row("gate:0.1", "gate", 0.2, 1.4),
            row("target:0.4:product", "target-product", 0.25, 0.8),
        ];
        let c = csv(&rows);
        assert_eq!(c.lines().count(), 4);
        assert!(c
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("gate:0.1,gate,0.2000,"));
        let m = markdown(&rows);
        assert_eq!(m.lines().count(), 5);
        assert!(m.contains("| `target:0.4:product` | 25.0% | 25.0% |"));
        assert!(m.contains("| +1.40% | +0.9% .. +1.9% |"), "{m}");
        assert!(
            m.contains("| 111.1 (100.0) | 1.11× |"),
            "speeds without pairs: {m}"
        );
        assert!(m.contains("| 1.11× | – |"), "no bound without one: {m}");
        let mut paired = rows[0].clone();
        paired.speedup = Some(1.234);
        assert_eq!(paired.speedup(), Some(1.234));
        assert!(csv(&[paired.clone()]).trim_end().ends_with(",1.234,"));
        paired.byte_bound = Some(1.5);
        assert!(csv(&[paired.clone()]).trim_end().ends_with(",1.234,1.500"));
        // The bound, and the share of it the speed-up reached (1.234 / 1.5).
        assert!(markdown(&[paired]).contains("| 1.23× | 1.50× (0.82) |"));
        let s = svg(&rows, "SmolLM2 <test>", 20.0);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<circle").count(), 6);
        assert!(s.contains("SmolLM2 &lt;test&gt;"));
    }

    #[test]
    fn byte_bound_follows_the_bytes_left() {
        assert_eq!(byte_bound(0.5, 0.0), 1.0);
        // Half the bytes are FFN, half of those skipped: 3/4 of the bytes left.
        assert!((byte_bound(0.5, 0.5) - 4.0 / 3.0).abs() < 1e-12);
        assert!((byte_bound(0.739, 0.323) - 1.3136).abs() < 1e-3);
        assert!(byte_bound(1.0, 1.0).is_finite());
    }

    /// Checked against the file's tensor table: every tensor but the token embedding, plus
    /// one row of it (the synthetic model has its own output head).
    #[test]
    fn decode_bytes_count_every_tensor_once_and_one_embedding_row() {
        let shape = crate::cli::synth::shape("tiny").unwrap();
        let w = crate::cli::synth::build(&shape, "llama", "q4_k_m", None, 5).unwrap();
        let file = crate::gguf::GgufFile::from_bytes(w.to_bytes()).unwrap();
        let (mut ffn, mut all, mut embd_row) = (0, 0, 0);
        for t in file.tensors() {
            let (_, bytes) = file.tensor(&t.name).unwrap();
            if t.name == "token_embd.weight" {
                embd_row = bytes.len() / shape.n_vocab;
                continue;
            }
            all += bytes.len();
            if t.name.contains(".ffn_") && !t.name.contains("norm") {
                ffn += bytes.len();
            }
        }
        let model = Model::from_file(
            file,
            &crate::model::ModelParams {
                skip_tokenizer: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!model.weights().tied_embeddings);
        assert_eq!(decode_weight_bytes(&model), (ffn, all + embd_row));
    }
}
