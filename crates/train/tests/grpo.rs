//! GRPO trainer on the tiny Qwen2 fixture: micro-batching (gradient accumulation) gives the
//! same update as the whole batch, for every aggregation.

use std::path::PathBuf;

use reasonlab_model::Model;
use reasonlab_model::tensor::Device;
use reasonlab_reward::{NotApplicable, Reward, Sample, WeightedSum};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, LossAgg, Preset, Task};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

fn weights(m: &Model) -> Vec<f32> {
    m.hf_tensors()
        .unwrap()
        .into_values()
        .flat_map(|(_, v)| v)
        .collect()
}

#[test]
fn micro_batches_give_the_whole_batch_update() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    // A custom reward that varies between completions whatever the random model writes (a
    // byte checksum), so the advantages are never all zero.
    struct Checksum;
    impl Reward for Checksum {
        fn name(&self) -> &str {
            "checksum"
        }
        fn score(&self, sample: &Sample<'_>) -> Option<f64> {
            Some((sample.completion.bytes().map(u64::from).sum::<u64>() % 7) as f64 / 7.0)
        }
    }
    let rewards = WeightedSum::from_parts(
        vec![("checksum".into(), 1.0, Box::new(Checksum))],
        NotApplicable::Skip,
    );
    let names = vec!["checksum".to_string()];
    let tasks: Vec<Task> = (0..3)
        .map(|i| Task {
            id: i.to_string(),
            prompt: format!("Question {i}: what is {i} + {i}?"),
            gold: Some((2 * i).to_string()),
            add_special_tokens: true,
        })
        .collect();
    for agg in [LossAgg::SequenceMean, LossAgg::TokenMean, LossAgg::Constant] {
        let run = |micro: usize| {
            let mut s = GrpoSettings::preset(Preset::Deepseekmath);
            s.group_size = 4;
            s.prompts_per_step = 3;
            s.max_new_tokens = 12;
            s.loss.aggregation = agg;
            s.loss.beta = 0.04;
            s.mu = 2;
            s.optim.lr = 1e-2;
            s.optim.eps = 1.0; // proportional first steps: no sign flips from float noise
            s.micro_batch_size = micro;
            let device = Device::flex().autodiff();
            let policy = Model::load(&fixture(), &device).unwrap();
            let mut t = GrpoTrainer::new(s, policy, &tok, &rewards, &names).unwrap();
            let (m, _) = t.step(&tasks).unwrap();
            (m.loss, m.kl, weights(&t.policy), m.entropy)
        };
        let (l0, kl0, w0, e0) = run(0);
        let (l1, kl1, w1, e1) = run(5);
        // Entropy of a 512-token distribution: in (0, ln 512].
        assert!(
            e0 > 0.0 && e0 <= (512f32).ln() + 1e-4,
            "{agg:?}: entropy {e0}"
        );
        assert!((e0 - e1).abs() < 1e-4, "{agg:?}: entropy {e0} vs {e1}");
        assert!((l0 - l1).abs() < 1e-5, "{agg:?}: loss {l0} vs {l1}");
        assert!((kl0 - kl1).abs() < 1e-5, "{agg:?}: kl {kl0} vs {kl1}");
        let worst = w0
            .iter()
            .zip(&w1)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{agg:?}: weights differ by {worst}");
        let base = weights(&Model::load(&fixture(), &Device::flex()).unwrap());
        assert!(w0 != base, "{agg:?}: the step changed nothing");
    }
}
