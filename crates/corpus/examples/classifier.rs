//! A fastText-like command line over the library, for `scripts/fasttext_check.py` until the
//! `reasonlab classifier` subcommand is wired:
//!
//! ```text
//! cargo run --release -p reasonlab-corpus --example classifier -- predict M.bin FILE [k] [--prob]
//! cargo run --release -p reasonlab-corpus --example classifier -- test M.bin FILE [k]
//! cargo run --release -p reasonlab-corpus --example classifier -- train IN OUT dim lr ngrams min_count epoch bucket thread loss
//! ```

use std::path::Path;

use reasonlab_corpus::classifier;
use reasonlab_corpus::fasttext::Args;
use reasonlab_corpus::segment::Segmentation;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let prob = a.iter().any(|x| x == "--prob");
    let a: Vec<&String> = a.iter().filter(|x| *x != "--prob").collect();
    match a.get(1).map(|s| s.as_str()) {
        Some("predict") => {
            let k = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let mut out = std::io::stdout().lock();
            classifier::predict_file(
                Path::new(a[2]),
                Path::new(a[3]),
                k,
                0.0,
                prob,
                2,
                Segmentation::Whitespace,
                &mut out,
            )?;
        }
        Some("test") => {
            let k = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let m = classifier::test_file(
                Path::new(a[2]),
                Path::new(a[3]),
                k,
                0.0,
                Segmentation::Whitespace,
            )?;
            print!("{}", m.general_metrics(k));
        }
        Some("train") => {
            let args = Args {
                dim: a[4].parse()?,
                lr: a[5].parse()?,
                word_ngrams: a[6].parse()?,
                min_count: a[7].parse()?,
                epoch: a[8].parse()?,
                bucket: a[9].parse()?,
                thread: a[10].parse()?,
                loss: a[11].parse()?,
                ..Args::default()
            };
            let r = classifier::train_file(
                Path::new(a[2]),
                Path::new(a[3]),
                &args,
                Segmentation::Whitespace,
            )?;
            eprintln!("{}", serde_json::to_string(&r)?);
        }
        _ => return Err("usage: classifier predict|test|train ...".into()),
    }
    Ok(())
}
