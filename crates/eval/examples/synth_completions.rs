//! Writes a synthetic completions file for timing offline scoring (docs/eval.md):
//! `N` samples for each MATH-500 problem, about 4,000 characters each (the reference solution
//! with its `\boxed` removed, repeated, as stand-in reasoning), ending in `\boxed{gold}`
//! (probability falling with the MATH level), a distractor, or no answer (a truncated sample).
//!
//! ```text
//! cargo run --release -p reasonlab-eval --example synth_completions -- /tmp/math500_x64.jsonl 64
//! ```

use std::io::Write;

use reasonlab_eval::{Benchmark, BuiltIn};

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded, dependency-free generator.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .unwrap_or_else(|| "math500_synthetic.jsonl".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let problems = Benchmark::BuiltIn(BuiltIn::Math500).load()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut rng = 42u64;
    let mut lines = 0usize;
    for p in &problems {
        let solution = p
            .solution
            .as_deref()
            .unwrap_or(&p.problem)
            .replace("\\boxed", "");
        let mut body = String::new();
        while body.len() < 4000 {
            body.push_str(&solution);
            body.push('\n');
        }
        let p_right = 1.0 - 0.15 * p.level.unwrap_or(3) as f64;
        for _ in 0..n {
            let u = (splitmix(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
            let g = &p.answer;
            let (answer, finish) = if u < 0.05 {
                (String::new(), "length")
            } else if u < 0.05 + 0.95 * p_right {
                (format!("The final answer is $\\boxed{{{g}}}$."), "stop")
            } else {
                let d = match splitmix(&mut rng) % 3 {
                    0 => format!("{g}+1"),
                    1 => format!("2({g})"),
                    _ => format!("-({g})"),
                };
                (format!("The final answer is $\\boxed{{{d}}}$."), "stop")
            };
            let completion = format!("{body}{answer}");
            let tokens = completion.len() / 4;
            let rec = serde_json::json!({
                "id": p.id, "completion": completion,
                "finish_reason": finish, "completion_tokens": tokens,
            });
            writeln!(file, "{rec}")?;
            lines += 1;
        }
    }
    file.flush()?;
    eprintln!("wrote {lines} completions to {out}");
    Ok(())
}
