//! RL against SFT (DeepSeekMath §5.2.2, Fig. 7): `reasonlab experiment rl-vs-sft`.
//!
//! The paper's claim: RL improves Maj@K but not Pass@K — it makes the output distribution more
//! robust (the right answer moves into the top) rather than adding capabilities. For every seed:
//! the demo's tokenizer, tiny model and SFT warm-up give the SFT model; the demo's GRPO run
//! (rule rewards, 200 steps) gives the RL model. Both sample `n` completions of every held-out
//! problem at T = 1, and pass@K and maj@K (cons@K) are read for K = 1, 2, 4, … n.

use std::path::Path;

use reasonlab_answer::VerifyConfig;
use reasonlab_eval::MetricKey;
use reasonlab_reward::RewardConfig;
use reasonlab_train::grpo::GrpoTrainer;
use serde::Serialize;

use super::{Measured, Probe, Stat, chart, finish, measure, stat_series, write_json};
use crate::demo::{self, DemoError, DemoSettings, io_err};

/// The experiment's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct RlVsSftSettings {
    pub seeds: Vec<u64>,
    /// Samples per held-out problem (the largest K).
    pub n: usize,
    /// The demo's settings: model, warm-up, GRPO and the number of held-out problems.
    pub demo: DemoSettings,
}

impl RlVsSftSettings {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            n: 64,
            demo: DemoSettings::full(0),
        }
    }

    pub fn quick(seeds: Vec<u64>) -> Self {
        let mut s = Self::new(seeds);
        s.n = 4;
        s.demo.warmup_steps = 20;
        s.demo.grpo_steps = 2;
        s.demo.eval_problems = 16;
        s
    }

    fn ks(&self) -> Vec<usize> {
        std::iter::successors(Some(1usize), |k| Some(k * 2))
            .take_while(|&k| k <= self.n)
            .collect()
    }
}

/// The two models of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct RlVsSftSeed {
    pub seed: u64,
    pub sft: Measured,
    pub rl: Measured,
}

/// One K: mean ± std over seeds of each model's pass@K and maj@K.
#[derive(Debug, Clone, Serialize)]
pub struct RlVsSftRow {
    pub k: usize,
    pub sft_pass: Stat,
    pub rl_pass: Stat,
    pub sft_maj: Stat,
    pub rl_maj: Stat,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RlVsSftSummary {
    pub settings: RlVsSftSettings,
    pub seeds: Vec<RlVsSftSeed>,
    pub rows: Vec<RlVsSftRow>,
    pub seconds: f64,
}

/// Run every seed into `out`.
pub fn run(
    out: &Path,
    s: &RlVsSftSettings,
    on_phase: &mut dyn FnMut(u64, &str),
) -> Result<RlVsSftSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(io_err(out))?;
    let ks = s.ks();
    let mut seeds = Vec::new();
    for &seed in &s.seeds {
        let d = DemoSettings {
            seed,
            ..s.demo.clone()
        };
        let (tok, held_out, train) = demo::task(&d)?;
        on_phase(seed, "sft");
        let sft = demo::cold_start(&tok, &train, &held_out, &d)?;
        let probe = Probe {
            prompt: &demo::prompt,
            n: s.n,
            ks: &ks,
            max_new_tokens: 24,
            seed: seed ^ 0xE7A1,
            verify: VerifyConfig::default(),
            format: None,
        };
        let sft_measured = measure(&sft.inference_copy(), &tok, &held_out, &probe)?;
        on_phase(seed, "grpo");
        let rewards = RewardConfig::from_toml(demo::REWARDS)?.build();
        let tasks = demo::tasks(&train);
        let mut trainer = GrpoTrainer::new(demo::grpo_settings(&d), sft, &tok, &rewards)?;
        for _ in 0..d.grpo_steps {
            trainer.step(&tasks)?;
        }
        let rl_measured = measure(&trainer.policy().inference_copy(), &tok, &held_out, &probe)?;
        seeds.push(RlVsSftSeed {
            seed,
            sft: sft_measured,
            rl: rl_measured,
        });
    }
    let rows: Vec<RlVsSftRow> = ks
        .iter()
        .map(|&k| {
            let stat = |f: &dyn Fn(&RlVsSftSeed) -> f64| Stat::over(&seeds, f);
            RlVsSftRow {
                k,
                sft_pass: stat(&|x| x.sft.get(MetricKey::PassAt(k))),
                rl_pass: stat(&|x| x.rl.get(MetricKey::PassAt(k))),
                sft_maj: stat(&|x| x.sft.get(MetricKey::ConsAt(k))),
                rl_maj: stat(&|x| x.rl.get(MetricKey::ConsAt(k))),
            }
        })
        .collect();
    let summary = RlVsSftSummary {
        settings: s.clone(),
        seeds,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    let series =
        |f: fn(&RlVsSftRow) -> &Stat| stat_series(&summary.rows, |_, r| (r.k as f64).log2(), f);
    let plots = out.join("plots");
    let charts = vec![
        chart(
            &plots,
            "pass_at_k",
            "pass@K: SFT and RL (held-out)",
            "log2 K",
            &[
                ("SFT", series(|r| &r.sft_pass)),
                ("RL", series(|r| &r.rl_pass)),
            ],
        )?,
        chart(
            &plots,
            "maj_at_k",
            "maj@K: SFT and RL (held-out)",
            "log2 K",
            &[
                ("SFT", series(|r| &r.sft_maj)),
                ("RL", series(|r| &r.rl_maj)),
            ],
        )?,
    ];
    finish(out, "RL against SFT", &render_markdown(&summary), &charts)?;
    Ok(summary)
}

/// The table of `summary.json`'s rows.
pub fn render_markdown(s: &RlVsSftSummary) -> String {
    let mut out = format!(
        "held-out ({} problems × {} samples, T = 1), mean ± std over seeds {:?}\n\n\
         | K | pass@K SFT | pass@K RL | maj@K SFT | maj@K RL |\n| ---: | ---: | ---: | ---: | ---: |\n",
        s.settings.demo.eval_problems, s.settings.n, s.settings.seeds
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.k,
            r.sft_pass.cell(),
            r.rl_pass.cell(),
            r.sft_maj.cell(),
            r.rl_maj.cell()
        ));
    }
    out
}
