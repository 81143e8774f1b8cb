//! `cargo xtask bench dump|restore --against OTHER_CKPT`: the same workloads measured
//! with this build and with another ckpt binary (say, the previous commit's), run by
//! run, alternating which goes first, so both meet the same machine load. Prints the
//! medians of both and their ratio (this / other): on a noisy machine only ratios
//! measured side by side in one run say whether a change made ckpt slower.

use std::path::Path;

use anyhow::{Result, bail};

use super::bench_dump::Case;
use crate::util;

/// Measures one run of `case` with one binary: named figures.
pub(crate) type Figures = fn(&Path, &Path, &Case, u32) -> Result<Vec<(&'static str, f64)>>;

pub fn run(
    title: &str,
    figures: Figures,
    ckpt: &Path,
    other: &Path,
    rounds: u32,
    cases: &[&'static Case],
) -> Result<()> {
    if !other.is_file() {
        bail!("--against {}: no such ckpt binary", other.display());
    }
    let rounds = rounds.clamp(3, 9);
    let wl = util::release_dir().join("wl-dump");
    if !wl.is_file() {
        bail!("{} does not exist", wl.display());
    }
    println!(
        "bench {title} side by side: {rounds} runs per workload and binary, alternating\n  this:  {}\n  other: {}",
        ckpt.display(),
        other.display()
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for &case in cases {
        // (figure name, this build's values, the other's values)
        let mut by: Vec<(&'static str, Vec<f64>, Vec<f64>)> = Vec::new();
        for i in 0..rounds {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let bin = if which == 0 { ckpt } else { other };
                match figures(bin, &wl, case, i * 2 + which as u32) {
                    Ok(fig) => {
                        for (name, v) in fig {
                            let at = match by.iter().position(|b| b.0 == name) {
                                Some(at) => at,
                                None => {
                                    by.push((name, Vec::new(), Vec::new()));
                                    by.len() - 1
                                }
                            };
                            if which == 0 {
                                by[at].1.push(v);
                            } else {
                                by[at].2.push(v);
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "xtask: {} run {} ({}): {e:#}",
                            case.key,
                            i + 1,
                            if which == 0 { "this" } else { "other" }
                        );
                        failed = true;
                    }
                }
            }
        }
        println!("  {:<9} done", case.key);
        rows.push((case, by));
    }
    println!(
        "\n{:<10} {:<10} │ {:>10} {:>10} │ {:>7}",
        "workload", "figure", "this", "other", "ratio"
    );
    for (case, by) in &rows {
        for (name, mine, theirs) in by {
            if mine.is_empty() || theirs.is_empty() {
                println!("{:<10} {:<10} │ no runs", case.key, name);
                continue;
            }
            let (a, b) = (util::median(mine), util::median(theirs));
            println!(
                "{:<10} {:<10} │ {:>10.4} {:>10.4} │ {:>7.3}",
                case.key,
                name,
                a,
                b,
                if b > 0.0 { a / b } else { f64::NAN }
            );
        }
    }
    if failed {
        bail!("some runs failed (see above)");
    }
    Ok(())
}
