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
        rerank: None,
        tools: None,
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
    // Best-of-N beside majority voting, on the same samples, with a process and an outcome
    // model; the config names the reward model and reads back.
    for (model, aggregate) in [("tiny-qwen2-prm", "last"), ("tiny-qwen2-rm", "min")] {
        let mut ranked = run.clone();
        ranked.rerank = Some(
            toml::from_str(&format!(
                "model = {:?}\naggregate = {aggregate:?}",
                root.join("fixtures").join(model)
            ))
            .unwrap(),
        );
        let r = eval::run(&ranked, &dir, tmp.path(), &mut |_| {}).unwrap();
        assert_eq!(r.counts.generated, 0, "the samples are reused");
        let m = &r.benchmarks[0].scores.metrics;
        let bon = m[&reasonlab_eval::MetricKey::BestOfAt(2)].mean;
        assert!(
            (0.0..=1.0).contains(&bon) && m.contains_key(&reasonlab_eval::MetricKey::ConsAt(2))
        );
        assert_eq!(EvalRun::load(&dir.config()).unwrap(), ranked);
    }
}

/// `batching` in an engine table reaches the local engine (a limit left out keeps its
/// default) and survives the resolved config's round trip; with an endpoint it is refused, as
/// is a misspelt key.
#[test]
fn an_engine_tables_batching_reaches_the_local_engine() {
    use reasonlab_generate::Batching;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spec: EngineSpec =
        toml::from_str("model = \"fixtures/tiny-qwen2\"\nbatching = { max_batch = 3 }\n").unwrap();
    let want = Batching {
        max_batch: 3,
        ..Batching::default()
    };
    assert_eq!(spec.batching, Some(want));
    let engine = spec.local_engine(&root, &mut |_| {}).unwrap();
    assert_eq!(engine.batching(), want);
    let back: EngineSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);

    let remote: EngineSpec = toml::from_str(
        "endpoint = \"http://127.0.0.1:9\"\nmodel_name = \"m\"\nbatching = { max_batch = 3 }\n",
    )
    .unwrap();
    let err = remote.build(&root, &mut |_| {}).err().expect("refused");
    assert!(
        err.to_string()
            .contains("batching applies to a local model"),
        "{err}"
    );

    let typo = toml::from_str::<EngineSpec>("model = \"m\"\nbatching = { max_batches = 3 }\n")
        .unwrap_err();
    assert!(typo.to_string().contains("max_batches"), "{typo}");
}
