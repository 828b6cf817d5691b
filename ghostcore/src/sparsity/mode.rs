//! The `--sparsity` mode language: which FFN neurons (or input entries) a decode step skips.
//!
//! Grammar (comma-separated parts; `dead`, `input:S` and `coarse:S` combine with each other
//! and with any one rule except `budget:P`, which combines only with `dead`; e.g.
//! `input:0.2,cascade:0.2:0.45:upw` zeroes 20% of the FFN input, which removes gate and up
//! columns, and then applies the cascade to the neurons of the masked input):
//!
//! | text | meaning |
//! |---|---|
//! | `dense` or `off` | no sparsity (the default) |
//! | `dead` | drop the sidecar's dead neurons from gate/up/down |
//! | `gate:T` | GhostGate: skip neurons with \|act(gate·x)\| ≤ T (one global T) |
//! | `target:S[:SCORE]` | per-layer calibrated thresholds reaching sparsity S on SCORE (`act` default, `product`, `upw`, `actw`, `auto`) |
//! | `cascade:S1:S2[:FIRST]` | skip up+down for the S1 share with the smallest \|act\| (or \|act\|·mean\|up\| with `upw`), then down for neurons whose product falls in the smallest S2 share. `actw` runs up first: the up matvec dense, gate+down skipped for the smallest \|up\|·mean\|act\|; `auto` takes `upw` or `actw` per layer, whichever lost less on the calibration sample |
//! | `stat:K` | per-token threshold mean + K·σ of \|act(gate·x)\| |
//! | `input:S` | TEAL: zero the S share of smallest-magnitude FFN-input entries (calibrated per layer); gate and up skip those columns |
//! | `coarse:S` | the active neurons whose product falls in the smallest S share (calibrated per layer; S above the rule's down share) add their down row from a coarser neuron-major copy (e.g. Q4_0 for a Q6_K down): fewer bytes for the neurons that contribute least |
//! | `budget:P` | the sidecar's best setting within a P% perplexity increase |
//!
//! Sparsities are fractions in `[0, 1)` or percentages (`40%`).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The per-neuron score a calibrated threshold is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Score {
    /// |act(gate·x)| (CATS / GhostGate). Skips up and down rows.
    Act,
    /// |act(gate·x)·(up·x)|: needs the dense up matvec, so only down rows are skipped.
    Product,
    /// |act(gate·x)| times the neuron's calibrated mean |up·x|: a cheap product predictor.
    UpWeighted,
    /// |up·x| times the neuron's calibrated mean |act(gate·x)|: the same predictor from the
    /// other side. The up matvec runs dense and the gate rows of skipped neurons are never
    /// read (up first).
    ActWeighted,
    /// Per layer, `upw` or `actw`: whichever lost the smaller share of Σ|act·up|² on the
    /// calibration sample at the first stage's share (a choice between two scores, with no
    /// thresholds of its own; cascades and targets only).
    Auto,
}

impl Score {
    /// The scores that have calibrated thresholds of their own.
    pub const ALL: [Score; 4] = [
        Score::Act,
        Score::Product,
        Score::UpWeighted,
        Score::ActWeighted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Score::Act => "act",
            Score::Product => "product",
            Score::UpWeighted => "upw",
            Score::ActWeighted => "actw",
            Score::Auto => "auto",
        }
    }

    /// A score by name: one of [`Score::ALL`], or `auto`.
    pub fn from_name(s: &str) -> Option<Score> {
        Score::ALL
            .into_iter()
            .chain([Score::Auto])
            .find(|x| x.name() == s)
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thresholding rule (at most one per mode).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// Global |act(gate·x)| threshold.
    Gate(f32),
    /// Per-layer calibrated thresholds reaching the given sparsity on `score`.
    Target { sparsity: f32, score: Score },
    /// Two stages: `skip_all` share by `first` (`Act` or `UpWeighted`: no up, no down;
    /// `ActWeighted`: no gate, no down), then `skip_down` share by product.
    Cascade {
        skip_all: f32,
        skip_down: f32,
        first: Score,
    },
    /// Per-token mean + k·σ of |act(gate·x)|.
    Stat(f32),
    /// Accepted perplexity increase in percent; resolved through the sidecar.
    Budget(f32),
}

/// A parsed `--sparsity` value.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SparsityMode {
    /// Remove the sidecar's dead neurons.
    pub dead: bool,
    /// TEAL input sparsity: the share of FFN-input entries zeroed (per-layer calibrated
    /// thresholds), so that gate and up skip those columns. Combines with `rule`.
    pub input: Option<f32>,
    /// Coarse down rows: the share of neurons, by product, below which an active neuron's
    /// down row is read from the coarser copy. Combines with `rule`.
    pub coarse: Option<f32>,
    pub rule: Option<Rule>,
}

impl SparsityMode {
    pub const DENSE: SparsityMode = SparsityMode {
        dead: false,
        input: None,
        coarse: None,
        rule: None,
    };

    /// A mode with one rule and nothing else.
    pub fn rule(rule: Rule) -> SparsityMode {
        SparsityMode {
            rule: Some(rule),
            ..SparsityMode::DENSE
        }
    }

    /// No neuron (and no input entry) is ever skipped, and every down row is read exact.
    pub fn is_dense(&self) -> bool {
        !self.dead && self.input.is_none() && self.coarse.is_none() && self.rule.is_none()
    }

    /// Whether this mode needs per-layer calibrated data from a sidecar.
    pub fn needs_sidecar(&self) -> bool {
        self.dead
            || self.input.is_some()
            || self.coarse.is_some()
            || matches!(
                self.rule,
                Some(Rule::Target { .. } | Rule::Cascade { .. } | Rule::Budget(_))
            )
    }
}

/// `slot := S` for the part `NAME:S` of mode `mode` (an error if the mode named it already).
fn parse_share_part(mode: &str, part: &str, what: &str, slot: &mut Option<f32>) -> Result<()> {
    let (name, args) = part.split_once(':').unwrap_or((part, ""));
    if slot.is_some() {
        crate::bail!(InvalidArgument, "sparsity mode {mode:?} names {name} twice");
    }
    if args.is_empty() || args.contains(':') {
        crate::bail!(
            InvalidArgument,
            "sparsity rule {part:?}: wrong number of ':' arguments"
        );
    }
    *slot = Some(parse_fraction(args.trim(), what)?);
    Ok(())
}

fn parse_fraction(s: &str, what: &str) -> Result<f32> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 0.01),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("{what}: {s:?} is not a number")))?;
    let v = (v * scale) as f32;
    if !(0.0..1.0).contains(&v) {
        crate::bail!(
            InvalidArgument,
            "{what}: {s:?} must lie in [0, 1) (or [0%, 100%))"
        );
    }
    Ok(v)
}

fn parse_finite(s: &str, what: &str) -> Result<f32> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("{what}: {s:?} is not a number")))?;
    if !v.is_finite() {
        crate::bail!(InvalidArgument, "{what}: {s:?} is not finite");
    }
    Ok(v)
}

fn parse_rule(part: &str) -> Result<Rule> {
    let mut it = part.split(':');
    let head = it.next().unwrap_or_default().trim();
    let args: Vec<&str> = it.map(str::trim).collect();
    let want = |n: std::ops::RangeInclusive<usize>| -> Result<()> {
        if !n.contains(&args.len()) {
            crate::bail!(
                InvalidArgument,
                "sparsity rule {part:?}: wrong number of ':' arguments"
            );
        }
        Ok(())
    };
    match head {
        "gate" => {
            want(1..=1)?;
            let t = parse_finite(args[0], "gate threshold")?;
            if t < 0.0 {
                crate::bail!(InvalidArgument, "gate threshold {t} is negative");
            }
            Ok(Rule::Gate(t))
        }
        "target" => {
            want(1..=2)?;
            let sparsity = parse_fraction(args[0], "target sparsity")?;
            let score = match args.get(1) {
                None => Score::Act,
                Some(name) => Score::from_name(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown score {name:?} (expected act, product, upw, actw or auto)"
                    ))
                })?,
            };
            Ok(Rule::Target { sparsity, score })
        }
        "cascade" => {
            want(2..=3)?;
            let first = match args.get(2) {
                None => Score::Act,
                Some(name) => match Score::from_name(name) {
                    Some(
                        sc @ (Score::Act | Score::UpWeighted | Score::ActWeighted | Score::Auto),
                    ) => sc,
                    _ => crate::bail!(
                        InvalidArgument,
                        "cascade first-stage score {name:?} (expected act, upw, actw or auto)"
                    ),
                },
            };
            let skip_all = parse_fraction(args[0], "cascade first-stage sparsity")?;
            let skip_down = parse_fraction(args[1], "cascade down sparsity")?;
            if skip_down < skip_all {
                crate::bail!(
                    InvalidArgument,
                    "cascade:{}:{}: the down sparsity must be at least the first-stage sparsity",
                    args[0],
                    args[1]
                );
            }
            Ok(Rule::Cascade {
                skip_all,
                skip_down,
                first,
            })
        }
        "stat" => {
            want(1..=1)?;
            Ok(Rule::Stat(parse_finite(args[0], "stat k")?))
        }
        "budget" => {
            want(1..=1)?;
            let p = parse_finite(args[0].trim_end_matches('%'), "budget")?;
            if p < 0.0 {
                crate::bail!(InvalidArgument, "budget {p}% is negative");
            }
            Ok(Rule::Budget(p))
        }
        other => crate::bail!(
            InvalidArgument,
            "unknown sparsity mode {other:?} (expected dense, dead, gate:T, target:S[:act|product|upw], cascade:S1:S2, stat:K, input:S, budget:P)"
        ),
    }
}

impl FromStr for SparsityMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut mode = SparsityMode::DENSE;
        let s = s.trim();
        if s.is_empty() {
            crate::bail!(InvalidArgument, "empty sparsity mode");
        }
        for part in s.split(',').map(str::trim) {
            match part {
                "dense" | "off" | "none" => {}
                "dead" => {
                    if mode.dead {
                        crate::bail!(InvalidArgument, "sparsity mode {s:?} names dead twice");
                    }
                    mode.dead = true;
                }
                _ if part.starts_with("input:") || part == "input" => {
                    parse_share_part(s, part, "input sparsity", &mut mode.input)?;
                }
                _ if part.starts_with("coarse:") || part == "coarse" => {
                    parse_share_part(s, part, "coarse share", &mut mode.coarse)?;
                }
                _ => {
                    if mode.rule.is_some() {
                        crate::bail!(
                            InvalidArgument,
                            "sparsity mode {s:?} has more than one rule (only `dead`, `input:S` and `coarse:S` combine)"
                        );
                    }
                    mode.rule = Some(parse_rule(part)?);
                }
            }
        }
        if (mode.input.is_some() || mode.coarse.is_some())
            && matches!(mode.rule, Some(Rule::Budget(_)))
        {
            crate::bail!(
                InvalidArgument,
                "sparsity mode {s:?}: budget:P chooses its own setting (only `dead` combines with it)"
            );
        }
        Ok(mode)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rule::Gate(t) => write!(f, "gate:{t}"),
            Rule::Target { sparsity, score } => write!(f, "target:{sparsity}:{score}"),
            Rule::Cascade {
                skip_all,
                skip_down,
                first: Score::Act,
            } => write!(f, "cascade:{skip_all}:{skip_down}"),
            Rule::Cascade {
                skip_all,
                skip_down,
                first,
            } => write!(f, "cascade:{skip_all}:{skip_down}:{first}"),
            Rule::Stat(k) => write!(f, "stat:{k}"),
            Rule::Budget(p) => write!(f, "budget:{p}"),
        }
    }
}

impl fmt::Display for SparsityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_dense() {
            return f.write_str("dense");
        }
        let mut parts: Vec<String> = Vec::with_capacity(3);
        if self.dead {
            parts.push("dead".into());
        }
        if let Some(s) = self.input {
            parts.push(format!("input:{s}"));
        }
        if let Some(r) = &self.rule {
            parts.push(r.to_string());
        }
        if let Some(s) = self.coarse {
            parts.push(format!("coarse:{s}"));
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<SparsityMode> {
        s.parse()
    }

    #[test]
    fn parses_each_mode() {
        assert!(p("dense").unwrap().is_dense());
        assert_eq!(
            p("dead").unwrap(),
            SparsityMode {
                dead: true,
                ..SparsityMode::DENSE
            }
        );
        assert_eq!(p("gate:0.05").unwrap().rule, Some(Rule::Gate(0.05)));
        assert_eq!(
            p("target:40%").unwrap().rule,
            Some(Rule::Target {
                sparsity: 0.4,
                score: Score::Act
            })
        );
        assert_eq!(
            p("target:0.5:product").unwrap().rule,
            Some(Rule::Target {
                sparsity: 0.5,
                score: Score::Product
            })
        );
        assert_eq!(p("stat:-0.5").unwrap().rule, Some(Rule::Stat(-0.5)));
        assert_eq!(p("input:0.25").unwrap().input, Some(0.25));
        assert_eq!(p("input:0.25").unwrap().rule, None);
        assert_eq!(
            p("dead,input:20%,cascade:0.2:0.45:upw").unwrap(),
            SparsityMode {
                dead: true,
                input: Some(0.2),
                coarse: None,
                rule: Some(Rule::Cascade {
                    skip_all: 0.2,
                    skip_down: 0.45,
                    first: Score::UpWeighted,
                })
            }
        );
        assert_eq!(
            p("input:0.1,cascade:0.25:0.4:auto,coarse:70%").unwrap(),
            SparsityMode {
                dead: false,
                input: Some(0.1),
                coarse: Some(0.7),
                rule: Some(Rule::Cascade {
                    skip_all: 0.25,
                    skip_down: 0.4,
                    first: Score::Auto,
                })
            }
        );
        assert_eq!(p("budget:2").unwrap().rule, Some(Rule::Budget(2.0)));
        assert_eq!(
            p("dead,cascade:0.2:0.4").unwrap(),
            SparsityMode {
                dead: true,
                input: None,
                coarse: None,
                rule: Some(Rule::Cascade {
                    skip_all: 0.2,
                    skip_down: 0.4,
                    first: Score::Act,
                })
            }
        );
        assert_eq!(
            p("cascade:0.2:0.6:upw").unwrap().rule,
            Some(Rule::Cascade {
                skip_all: 0.2,
                skip_down: 0.6,
                first: Score::UpWeighted,
            })
        );
        for (name, first) in [("actw", Score::ActWeighted), ("auto", Score::Auto)] {
            assert_eq!(
                p(&format!("cascade:0.25:0.45:{name}")).unwrap().rule,
                Some(Rule::Cascade {
                    skip_all: 0.25,
                    skip_down: 0.45,
                    first,
                })
            );
            assert_eq!(
                p(&format!("target:0.3:{name}")).unwrap().rule,
                Some(Rule::Target {
                    sparsity: 0.3,
                    score: first,
                })
            );
        }
        assert!(p("cascade:0.2:0.4:product").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "dense",
            "dead",
            "gate:0.1",
            "dead,target:0.4:upw",
            "cascade:0.1:0.5",
            "cascade:0.1:0.5:upw",
            "stat:2",
            "input:0.3",
            "input:0.2,cascade:0.2:0.45:upw",
            "input:0.1,cascade:0.25:0.45:actw",
            "cascade:0.2:0.4:auto",
            "target:0.3:auto",
            "dead,input:0.1,target:0.45:product",
            "input:0.1,cascade:0.25:0.4:auto,coarse:0.7",
            "budget:2",
        ] {
            let m = p(s).unwrap();
            assert_eq!(p(&m.to_string()).unwrap(), m, "{s}");
        }
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        for s in [
            "",
            "gate",
            "gate:-1",
            "gate:nan",
            "target:1.5",
            "target:0.4:bogus",
            "target:0.4:act:x",
            "cascade:0.5:0.2",
            "cascade:0.1:0.5:product",
            "cascade:0.1:0.5:upw:x",
            "gate:0.1,stat:1",
            "dead,dead",
            "sparse",
            "budget:-1",
            "input:0.1,input:0.2",
            "input:0.2,budget:2",
            "input",
            "input:0.2:0.3",
            "input:1.5",
            "coarse:0.6,coarse:0.7",
            "coarse:0.7,budget:2",
            "coarse",
            "coarse:0.5:0.6",
        ] {
            match p(s) {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{s:?} gave {other:?}"),
            }
        }
    }
}
