//! Runs [`reasonlab_reward::bench_verify`] on a suite file until the CLI's `reasonlab bench
//! verify` exists: `cargo run --release -p reasonlab-reward --example bench_verify -- SUITE`.
//! Set `RAYON_NUM_THREADS` to fix the thread count.

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "crates/answer/tests/data/suite.jsonl".to_string());
    match reasonlab_reward::bench_verify(std::path::Path::new(&path)) {
        Ok(report) => {
            println!("{report}");
            println!("wrong lines: {:?}", report.wrong_lines);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
