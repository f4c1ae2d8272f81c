//! Corpus quality (DeepSeekMath §2.2, Table 1 and Fig. 3): `reasonlab experiment corpus`.
//!
//! The paper's claim: a math corpus recalled from Common Crawl by its classifier pipeline
//! trains better math models than other selections at the same token budget. In miniature,
//! for every seed:
//!
//! 1. **The pool** ([`pool`], written to `seed-S/pool.jsonl` with `id`, `url`, `text`): a
//!    web-like mix of `pool_pages` pages — math pages (worksheets and stories about the training
//!    problems, several problems a page, on math sites and on a share of general blogs),
//!    school-news pages that talk about maths without doing any (keyword bait), sports and shop
//!    pages full of numbers, and everyday prose. Held-out problems never appear in it.
//! 2. **Three corpora of one whitespace-token budget** from it: (a) **recalled** by the
//!    fastText-style classifier loop of `reasonlab curate recall` (`reasonlab_corpus::recall`,
//!    DeepSeekMath's settings) trained on `seed_pages` seed math pages (written like the pool's
//!    but about other problems — the OpenWebMath seed's role) against random pool pages;
//!    (b) **random** pool pages; (c) **keyword**-filtered pages (any of [`KEYWORDS`]).
//! 3. A tiny model per corpus (same tokenizer, trained on the whole pool; same size, seed and
//!    steps), trained by next-token prediction, then evaluated few-shot on held-out problems:
//!    `shots` worked examples `Question: …\nAnswer: N` and the question; the first line of the
//!    completion is graded by its last number.
//!
//! The summary also records each corpus's share of math pages (the ground truth the pool
//! generator knows).

use std::collections::HashMap;
use std::path::Path;

use reasonlab_answer::{AnswerFormat, ExtractConfig, Fallback, VerifyConfig};
use reasonlab_core::jsonl::JsonlWriter;
use reasonlab_corpus::recall::{self, RecallConfig};
use reasonlab_eval::MetricKey;
use reasonlab_generate::generate;
use reasonlab_model::{Model, ModelConfig};
use reasonlab_tokenize::Tokenizer;
use serde::Serialize;

use super::{Stat, chart, finish, stat_series, write_json};
use crate::demo::{self, DemoError, Problem, io_err, lcg};

/// Words the keyword filter looks for.
pub const KEYWORDS: [&str; 6] = ["math", "add", "plus", "minus", "number", "sum"];

/// The experiment's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusSettings {
    pub seeds: Vec<u64>,
    pub pool_pages: usize,
    pub seed_pages: usize,
    /// Whitespace tokens in each corpus.
    pub token_budget: u64,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub hidden_size: usize,
    pub layers: usize,
    pub eval_problems: usize,
    pub eval_k: usize,
    pub shots: usize,
}

impl CorpusSettings {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            pool_pages: 20_000,
            seed_pages: 300,
            token_budget: 150_000,
            steps: 300,
            batch: 16,
            lr: 3e-3,
            hidden_size: 64,
            layers: 2,
            eval_problems: 100,
            eval_k: 4,
            shots: 3,
        }
    }

    pub fn quick(seeds: Vec<u64>) -> Self {
        Self {
            pool_pages: 600,
            seed_pages: 40,
            token_budget: 4_000,
            steps: 4,
            eval_problems: 8,
            eval_k: 2,
            ..Self::new(seeds)
        }
    }
}

/// What a pool page is (the generator's ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    Math,
    KeywordBait,
    Numbers,
    Prose,
}

/// One pool page.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub id: String,
    pub url: String,
    pub text: String,
    #[serde(skip)]
    pub kind: PageKind,
}

/// How a corpus was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    Recalled,
    Random,
    Keyword,
}

impl Selection {
    const ALL: [Selection; 3] = [Selection::Recalled, Selection::Random, Selection::Keyword];

    fn name(self) -> &'static str {
        match self {
            Selection::Recalled => "classifier-recalled",
            Selection::Random => "random",
            Selection::Keyword => "keyword-filtered",
        }
    }
}

/// One corpus of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusArm {
    pub seed: u64,
    pub selection: Selection,
    pub pages: usize,
    pub tokens: u64,
    /// Share of its pages that are math pages.
    pub math_share: f64,
    pub pass1: f64,
    pub pass_k: f64,
}

/// Mean ± std over seeds of one selection.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusRow {
    pub selection: Selection,
    pub math_share: Stat,
    pub pass1: Stat,
    pub pass_k: Stat,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusSummary {
    pub settings: CorpusSettings,
    pub arms: Vec<CorpusArm>,
    pub rows: Vec<CorpusRow>,
    pub seconds: f64,
}

const MATH_SITES: [&str; 3] = [
    "mathworksheets.example",
    "kidsarithmetic.example",
    "homeworkhelp.example",
];
const BLOGS: [&str; 4] = [
    "familyblog.example",
    "dailynotes.example",
    "townnews.example",
    "mylife.example",
];
const TEAMS: [&str; 4] = ["Lions", "Bears", "Hawks", "Tigers"];

fn pick<'a>(xs: &[&'a str], rng: &mut u64) -> &'a str {
    xs[lcg(rng) as usize % xs.len()]
}

/// One worked problem, as a worksheet line or a story.
fn worked(p: &Problem, rng: &mut u64) -> String {
    if lcg(rng).is_multiple_of(2) {
        format!("Question: {}\nAnswer: {}", p.question, p.answer)
    } else {
        let did = if p.op == '+' {
            format!("got {} more", p.b)
        } else {
            format!("gave away {}", p.b)
        };
        format!(
            "{} had {} {}s and {did}. {} {} {} = {}, so {} has {} {}s.",
            p.name, p.a, p.item, p.a, p.op, p.b, p.answer, p.name, p.answer, p.item
        )
    }
}

fn math_page(problems: &[&Problem], rng: &mut u64) -> String {
    let mut lines = vec![match lcg(rng) % 3 {
        0 => "Math practice: add and take away.".to_string(),
        1 => "Worked examples for young learners.".to_string(),
        _ => "Homework answers, checked by a teacher.".to_string(),
    }];
    lines.extend(problems.iter().map(|p| worked(p, rng)));
    lines.join("\n")
}

fn bait_page(rng: &mut u64) -> String {
    let n = pick(&demo_names(), rng);
    let m = pick(&demo_names(), rng);
    format!(
        "School news. The math club meets after lunch on Tuesday. {n} says number games are the \
         best part of the week, and {m} wants to add a chess table. Parents can sum up their \
         ideas in the comments. The plus side: snacks are free."
    )
}

fn numbers_page(rng: &mut u64) -> String {
    let (a, b) = (lcg(rng) % 9 + 1, lcg(rng) % 9 + 1);
    let (t, u) = (pick(&TEAMS, rng), pick(&TEAMS, rng));
    let price = lcg(rng) % 9 + 1;
    format!(
        "Sports and shopping. The {t} played the {u} on Sunday and the score was {a} to {b}. \
         Tickets cost {price} dollars at gate {a}. The shop on street {b} opens at {price}."
    )
}

fn prose_page(rng: &mut u64) -> String {
    let n = pick(&demo_names(), rng);
    let place = pick(&["park", "market", "library", "river", "garden"], rng);
    let weather = pick(&["sunny", "rainy", "windy", "cold"], rng);
    format!(
        "It was {weather} when {n} walked to the {place}. {n} liked the {place} because it was \
         quiet there. Later {n} went home for dinner and read a book."
    )
}

fn demo_names() -> [&'static str; 6] {
    ["Tom", "Ana", "Li", "Sara", "Omar", "Mia"]
}

/// The pool of `n` pages: 15% math (two thirds on math sites, a third on general blogs), 15%
/// keyword bait, 20% numbers without arithmetic, 50% prose. Math pages hold 3–6 problems of
/// `problems`.
pub(crate) fn pool(problems: &[Problem], n: usize, seed: u64, id_prefix: &str) -> Vec<Page> {
    let mut rng = seed ^ 0xC0_4905;
    let mut next = 0usize;
    (0..n)
        .map(|i| {
            let roll = lcg(&mut rng) % 100;
            let (kind, host, text) = if roll < 15 {
                let k = 3 + lcg(&mut rng) as usize % 4;
                let ps: Vec<&Problem> = (0..k)
                    .map(|j| &problems[(next + j) % problems.len()])
                    .collect();
                next += k;
                let host = if roll < 10 {
                    pick(&MATH_SITES, &mut rng)
                } else {
                    pick(&BLOGS, &mut rng)
                };
                (PageKind::Math, host, math_page(&ps, &mut rng))
            } else if roll < 30 {
                (
                    PageKind::KeywordBait,
                    "schoolnews.example",
                    bait_page(&mut rng),
                )
            } else if roll < 50 {
                (
                    PageKind::Numbers,
                    pick(&BLOGS, &mut rng),
                    numbers_page(&mut rng),
                )
            } else {
                (
                    PageKind::Prose,
                    pick(&BLOGS, &mut rng),
                    prose_page(&mut rng),
                )
            };
            Page {
                id: format!("{id_prefix}{i}"),
                url: format!("https://{host}/p/{i}"),
                text,
                kind,
            }
        })
        .collect()
}

fn whitespace_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Pages in `order` until the budget is spent.
fn take_budget<'a>(order: impl Iterator<Item = &'a Page>, budget: u64) -> Vec<&'a Page> {
    let mut used = 0;
    let mut out = Vec::new();
    for p in order {
        let t = whitespace_tokens(&p.text);
        if used + t > budget {
            continue;
        }
        used += t;
        out.push(p);
    }
    out
}

fn write_pages(path: &Path, pages: &[&Page]) -> Result<(), DemoError> {
    let mut w = JsonlWriter::new(std::fs::File::create(path).map_err(io_err(path))?);
    for p in pages {
        w.write(p).map_err(io_err(path))?;
    }
    Ok(())
}

/// The classifier loop's selection within the budget.
fn recalled<'a>(
    dir: &Path,
    pool_pages: &'a [Page],
    seed_pages: &[Page],
    s: &CorpusSettings,
    seed: u64,
) -> Result<Vec<&'a Page>, DemoError> {
    let pool_path = dir.join("pool.jsonl");
    let seed_path = dir.join("seed.jsonl");
    write_pages(&pool_path, &pool_pages.iter().collect::<Vec<_>>())?;
    write_pages(&seed_path, &seed_pages.iter().collect::<Vec<_>>())?;
    let cfg: RecallConfig = toml::from_str(&format!(
        "seed = [{seed_path:?}]\nnegatives = [{pool_path:?}]\npool = [{pool_path:?}]\n\
         out_dir = {:?}\nrounds = 1\ntoken_budget = {}\nrandom_seed = {seed}\n",
        dir.join("recall"),
        s.token_budget
    ))
    .map_err(|e| DemoError::Engine(format!("recall config: {e}")))?;
    recall::run_all(&cfg).map_err(|e| DemoError::Engine(format!("recall: {e}")))?;
    let selected = cfg.round_dir(0).join("selected.jsonl");
    let rows: Vec<serde_json::Value> =
        reasonlab_core::jsonl::read(&selected, reasonlab_core::jsonl::BadLines::Reject)
            .map_err(|e| DemoError::Engine(e.to_string()))?;
    let by_id: HashMap<&str, &Page> = pool_pages.iter().map(|p| (p.id.as_str(), p)).collect();
    Ok(rows
        .iter()
        .filter_map(|r| by_id.get(r.get("id")?.as_str()?).copied())
        .collect())
}

fn config(vocab: usize, s: &CorpusSettings, eos: u32) -> ModelConfig {
    demo::tiny_config(vocab, s.hidden_size, s.layers, 256, eos)
}

/// Few-shot pass@1 and pass@k on the held-out problems.
fn few_shot(
    model: &Model,
    tok: &Tokenizer,
    held_out: &[Problem],
    shots: &[Problem],
    s: &CorpusSettings,
    seed: u64,
) -> Result<(f64, f64), DemoError> {
    let head: String = shots
        .iter()
        .map(|p| format!("Question: {}\nAnswer: {}\n\n", p.question, p.answer))
        .collect();
    let prompts: Vec<Vec<u32>> = held_out
        .iter()
        .map(|p| tok.encode(&format!("{head}Question: {}\nAnswer:", p.question), true))
        .collect::<Result<_, _>>()?;
    let mut params = demo::sampling(tok.eos_id().unwrap_or(0), seed ^ 0xF5);
    params.max_new_tokens = 6;
    let (out, _) = generate(model, Some(tok), &prompts, s.eval_k, &params, &mut |_| {})?;
    let problems = crate::demo::eval_problems(held_out);
    let mut samples = vec![Vec::new(); held_out.len()];
    for c in out {
        let first_line = c.text.trim_start().lines().next().unwrap_or("").to_string();
        samples[c.prompt_index].push(reasonlab_eval::Scored {
            text: first_line,
            finish_reason: None,
            completion_tokens: Some(c.token_ids.len()),
        });
    }
    let verify = VerifyConfig {
        extract: ExtractConfig {
            format: AnswerFormat::LastNumber,
            fallback: Fallback::None,
            ..Default::default()
        },
        ..Default::default()
    };
    let scores = reasonlab_eval::score(&problems, &samples, &[1, s.eval_k], &verify)?;
    let get = |k| scores.metrics.get(&k).map_or(f64::NAN, |e| e.mean);
    Ok((get(MetricKey::PassAt(1)), get(MetricKey::PassAt(s.eval_k))))
}

/// Run every seed into `out`.
pub fn run(
    out: &Path,
    s: &CorpusSettings,
    on_phase: &mut dyn FnMut(u64, &str),
) -> Result<CorpusSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(io_err(out))?;
    let mut arms = Vec::new();
    for &seed in &s.seeds {
        let dir = out.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let all = demo::problems(seed);
        let (held_out, rest) = all.split_at(s.eval_problems);
        let (shots, rest) = rest.split_at(s.shots);
        // The seed set is about other problems than the pool, as OpenWebMath is not Common Crawl.
        let (seed_problems, pool_problems) = rest.split_at(rest.len() / 5);
        on_phase(seed, "pool");
        let pool_pages = pool(pool_problems, s.pool_pages, seed, "p");
        let seed_pages: Vec<Page> = pool(seed_problems, s.seed_pages * 8, seed ^ 1, "s")
            .into_iter()
            .filter(|p| p.kind == PageKind::Math)
            .take(s.seed_pages)
            .collect();
        on_phase(seed, "recall");
        let recalled = recalled(&dir, &pool_pages, &seed_pages, s, seed)?;
        let mut order: Vec<&Page> = pool_pages.iter().collect();
        let mut rng = seed ^ 0x5A4D;
        for i in (1..order.len()).rev() {
            order.swap(i, lcg(&mut rng) as usize % (i + 1));
        }
        let random = take_budget(order.iter().copied(), s.token_budget);
        let keyword = take_budget(
            order.iter().copied().filter(|p| {
                let lower = p.text.to_lowercase();
                lower
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| KEYWORDS.contains(&w))
            }),
            s.token_budget,
        );
        let texts: Vec<String> = pool_pages.iter().map(|p| p.text.clone()).collect();
        let tok = demo::train_tokenizer_with(&texts, 512, &[])?;
        let eos = tok.eos_id().unwrap_or(0);
        for (selection, pages) in [
            (Selection::Recalled, &recalled),
            (Selection::Random, &random),
            (Selection::Keyword, &keyword),
        ] {
            on_phase(seed, selection.name());
            let docs: Vec<String> = pages.iter().map(|p| p.text.clone()).collect();
            let model = super::r1_zero::pretrain(
                &tok,
                &docs,
                config(tok.vocab_size(), s, eos),
                s.steps,
                s.batch,
                s.lr,
                seed,
            )?;
            let (pass1, pass_k) =
                few_shot(&model.inference_copy(), &tok, held_out, shots, s, seed)?;
            let math = pages.iter().filter(|p| p.kind == PageKind::Math).count();
            arms.push(CorpusArm {
                seed,
                selection,
                pages: pages.len(),
                tokens: pages.iter().map(|p| whitespace_tokens(&p.text)).sum(),
                math_share: math as f64 / pages.len().max(1) as f64,
                pass1,
                pass_k,
            });
        }
    }
    let rows: Vec<CorpusRow> = Selection::ALL
        .iter()
        .map(|&sel| {
            let at: Vec<&CorpusArm> = arms.iter().filter(|a| a.selection == sel).collect();
            let stat = |f: fn(&CorpusArm) -> f64| Stat::over(&at, |a| f(a));
            CorpusRow {
                selection: sel,
                math_share: stat(|a| a.math_share),
                pass1: stat(|a| a.pass1),
                pass_k: stat(|a| a.pass_k),
            }
        })
        .collect();
    let summary = CorpusSummary {
        settings: s.clone(),
        arms,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    let series = |f: fn(&CorpusRow) -> &Stat| stat_series(&summary.rows, |i, _| i as f64, f);
    let pass_k = format!("pass@{}", s.eval_k);
    let charts = vec![chart(
        &out.join("plots"),
        "corpora",
        "few-shot held-out accuracy: 0 recalled, 1 random, 2 keyword",
        "corpus",
        &[
            ("pass@1", series(|r| &r.pass1)),
            (&pass_k, series(|r| &r.pass_k)),
            ("math share", series(|r| &r.math_share)),
        ],
    )?];
    finish(
        out,
        "Corpus quality at one token budget",
        &render_markdown(&summary),
        &charts,
    )?;
    Ok(summary)
}

/// The table of `summary.json`'s rows.
pub fn render_markdown(s: &CorpusSummary) -> String {
    let st = &s.settings;
    let mut out = format!(
        "{}-shot held-out ({} problems × {} samples, T = 1), mean ± std over seeds {:?}; \
         {} whitespace tokens per corpus from a {}-page pool, {} steps × {} pages each\n\n\
         | corpus | math pages | pass@1 | pass@{} |\n| --- | ---: | ---: | ---: |\n",
        st.shots,
        st.eval_problems,
        st.eval_k,
        st.seeds,
        st.token_budget,
        st.pool_pages,
        st.steps,
        st.batch,
        st.eval_k
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.selection.name(),
            r.math_share.cell(),
            r.pass1.cell(),
            r.pass_k.cell()
        ));
    }
    out
}
