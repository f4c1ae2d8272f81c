//! The eval driver writes the run folder's resolved `config.toml`, which reads back as the
//! same run, and `summary.json` next to eval's own files; a rerun reuses every completion.

use std::path::PathBuf;

use reasonlab_eval::{Benchmark, EvalConfig, PromptTemplate};
use reasonlab_recipe::engines::EngineSpec;
use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::eval::{self, EvalRun};

#[test]
fn eval_run_folder_reads_back_and_resumes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    let bench = tmp.path().join("toy.jsonl");
    std::fs::write(
        &bench,
        "{\"id\": \"a\", \"problem\": \"1 + 1?\", \"answer\": \"2\"}\n{\"id\": \"b\", \"problem\": \"2 + 2?\", \"answer\": \"4\"}\n",
    )
    .unwrap();
    let mut cfg = EvalConfig::new(
        vec![Benchmark::parse(bench.to_str().unwrap()).unwrap()],
        PromptTemplate::Plain,
        2,
    );
    cfg.sampling.max_new_tokens = 4;
    let run = EvalRun {
        out: tmp.path().join("run"),
        engine: EngineSpec::local(root.join("fixtures/tiny-qwen2")),
        eval: cfg,
    };
    let dir = RunDir::create(&run.out).unwrap();
    let first = eval::run(&run, &dir, tmp.path(), &mut |_| {}).unwrap();
    assert_eq!((first.counts.generated, first.counts.reused), (4, 0));
    for f in [
        "config.toml",
        "summary.json",
        "completions.jsonl",
        "results.json",
        "report.md",
    ] {
        assert!(dir.root().join(f).exists(), "{f} missing");
    }
    assert_eq!(EvalRun::load(&dir.config()).unwrap(), run);
    let again = eval::run(&run, &dir, tmp.path(), &mut |_| {}).unwrap();
    assert_eq!((again.counts.generated, again.counts.reused), (0, 4));
}
