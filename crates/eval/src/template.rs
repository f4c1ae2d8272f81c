//! Prompt templates. Scores move by tens of points with the template, so the template is part
//! of every settings hash and report.

use serde::{Deserialize, Serialize};

use crate::benchmark::{FewShotStyle, Language};
use crate::fewshot;
use crate::{EvalError, Message, Prompt};

/// The instruction DeepSeek-R1 recommends for math (R1 paper §3, "Usage recommendations"; the
/// same sentence DeepSeekMath appends for English zero-shot CoT in
/// `evaluation/run_subset_parallel.py::markup_question`).
pub const R1_INSTRUCTION: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// DeepSeekMath's Chinese zero-shot CoT instruction (`run_subset_parallel.py::markup_question`,
/// `language == 'zh'`).
pub const ZH_INSTRUCTION: &str = "请通过逐步推理来解答问题，并把最终答案放置于\\boxed{}中。";

/// DeepSeek-R1-Zero's prompt (R1 paper, Table 1), for base models: `{problem}` is replaced by
/// the problem. Reasoning goes in `<think> </think>`, the answer in `<answer> </answer>`.
pub const R1_ZERO_TEMPLATE: &str = "A conversation between User and Assistant. The user asks a \
question, and the Assistant solves it. The assistant first thinks about the reasoning process in \
the mind and then provides the user with the answer. The reasoning process and answer are \
enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> \
reasoning process here </think> <answer> answer here </answer>. User: {problem}. Assistant:";

/// [`R1_ZERO_TEMPLATE`] with `problem` filled in.
pub fn r1_zero_prompt(problem: &str) -> String {
    R1_ZERO_TEMPLATE.replace("{problem}", problem.trim_end_matches(['.', ' ']))
}

/// How a problem becomes a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptTemplate {
    /// Zero-shot text: `problem + "\n" + R1_INSTRUCTION`.
    R1,
    /// DeepSeekMath few-shot chain of thought (GSM8K 8-shot, Minerva MATH 4-shot, CMATH
    /// 6-shot), with the matching stop string.
    FewshotCot,
    /// The problem text alone.
    Plain,
    /// One user message, `problem + "\n" + instruction` (English or Chinese by benchmark), to be
    /// rendered with the model's own chat template by the generator.
    Chat,
    /// Tool-integrated reasoning: one user message with Qwen2.5-Math's tool-integrated
    /// instruction (interleave reasoning with Python, answer in `\boxed{}`); for `--tools tora`.
    Tool,
    /// Program of thought: one user message asking for a Python program that prints the
    /// answer; for `--tools pot`.
    Pot,
    /// DeepSeek-R1-Zero's plain-text conversation prompt for base models
    /// ([`R1_ZERO_TEMPLATE`]).
    R1Zero,
}

/// Qwen2.5-Math's tool-integrated reasoning instruction.
pub const TOOL_INSTRUCTION: &str = "Please integrate natural language reasoning with programs to \
solve the problem above, and put your final answer within \\boxed{}.";

/// The program-of-thought instruction.
pub const POT_INSTRUCTION: &str = "Write a Python program that solves the problem above and \
prints the final answer.";

/// A rendered prompt and the stop strings it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    pub input: Prompt,
    /// Stop strings the template needs (added to the run's own).
    pub stop: Vec<String>,
}

impl PromptTemplate {
    pub fn name(self) -> &'static str {
        match self {
            PromptTemplate::R1 => "r1",
            PromptTemplate::FewshotCot => "fewshot-cot",
            PromptTemplate::Plain => "plain",
            PromptTemplate::Chat => "chat",
            PromptTemplate::Tool => "tool",
            PromptTemplate::Pot => "pot",
            PromptTemplate::R1Zero => "r1-zero",
        }
    }

    pub fn parse(name: &str) -> Result<Self, EvalError> {
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "r1" => Ok(PromptTemplate::R1),
            "fewshot-cot" | "few-shot-cot" | "fewshot" | "cot" => Ok(PromptTemplate::FewshotCot),
            "plain" => Ok(PromptTemplate::Plain),
            "chat" => Ok(PromptTemplate::Chat),
            "tool" | "tir" | "tora" => Ok(PromptTemplate::Tool),
            "pot" => Ok(PromptTemplate::Pot),
            "r1-zero" | "r1zero" => Ok(PromptTemplate::R1Zero),
            _ => Err(EvalError::UnknownTemplate {
                name: name.to_string(),
            }),
        }
    }

    /// Render one problem.
    pub fn render(self, problem: &str, language: Language, style: FewShotStyle) -> RenderedPrompt {
        match self {
            PromptTemplate::R1 => RenderedPrompt {
                input: Prompt::Text(format!("{problem}\n{R1_INSTRUCTION}")),
                stop: Vec::new(),
            },
            PromptTemplate::Plain => RenderedPrompt {
                input: Prompt::Text(problem.to_string()),
                stop: Vec::new(),
            },
            PromptTemplate::R1Zero => RenderedPrompt {
                input: Prompt::Text(r1_zero_prompt(problem)),
                stop: Vec::new(),
            },
            PromptTemplate::Chat => {
                let instruction = match language {
                    Language::En => R1_INSTRUCTION,
                    Language::Zh => ZH_INSTRUCTION,
                };
                RenderedPrompt {
                    input: Prompt::Messages(vec![Message::user(format!(
                        "{problem}\n{instruction}"
                    ))]),
                    stop: Vec::new(),
                }
            }
            PromptTemplate::Tool | PromptTemplate::Pot => {
                let instruction = if self == PromptTemplate::Tool {
                    TOOL_INSTRUCTION
                } else {
                    POT_INSTRUCTION
                };
                RenderedPrompt {
                    input: Prompt::Messages(vec![Message::user(format!(
                        "{problem}\n{instruction}"
                    ))]),
                    stop: Vec::new(),
                }
            }
            PromptTemplate::FewshotCot => {
                // `format_prompt(task_input, "")` then `.rstrip()` and `.lstrip()`
                // (DeepSeek-Math `evaluation/infer/run_cot_eval.py::infer`, which empties the
                // assistant message before formatting).
                let (text, stop) = match style {
                    FewShotStyle::Gsm8k => (
                        format!("{}\n\n\nQ: {problem}\nA: ", fewshot::GSM8K_8_SHOT),
                        "\nQ:",
                    ),
                    FewShotStyle::MinervaMath => (
                        format!(
                            "{}\n\nProblem:\n{problem}\n\nSolution:\n",
                            fewshot::MINERVA_MATH_4_SHOT
                        ),
                        "\nProblem:",
                    ),
                    FewShotStyle::Cmath => (
                        format!("{}\n\n\n问题：{problem}\n答案：", fewshot::CMATH_6_SHOT),
                        "\n问题：",
                    ),
                };
                RenderedPrompt {
                    input: Prompt::Text(text.trim().to_string()),
                    stop: vec![stop.to_string()],
                }
            }
        }
    }
}

impl std::fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_hex;

    fn text(r: RenderedPrompt) -> String {
        match r.input {
            Prompt::Text(t) => t,
            Prompt::Messages(_) => panic!("expected text"),
        }
    }

    /// Golden hashes: `cls().format_prompt("What is 1+1?", "").lstrip()` evaluated with Python
    /// on the upstream files at DeepSeek-Math b8b0f8ce.
    #[test]
    fn few_shot_prompts_match_upstream_bytes() {
        let cases = [
            (
                FewShotStyle::Gsm8k,
                "e7b66769f0c585c9c48d4f8c0a4d72e87c9927d99dd925b403eb8d5bad3ec1b0",
                "\nQ:",
            ),
            (
                FewShotStyle::MinervaMath,
                "1125c632aff24e9ade8a6224251bb2407c7aad678fd76018f60d32d80c1c613b",
                "\nProblem:",
            ),
            (
                FewShotStyle::Cmath,
                "a9c4bd7014aeb9d14ce31d2c0d74af03c93aa55dac63d093360f7830461f8eb8",
                "\n问题：",
            ),
        ];
        for (style, hash, stop) in cases {
            let r = PromptTemplate::FewshotCot.render("What is 1+1?", Language::En, style);
            assert_eq!(r.stop, vec![stop.to_string()]);
            assert_eq!(sha256_hex(text(r).as_bytes()), hash, "{style:?}");
        }
        assert_eq!(
            sha256_hex(fewshot::MINERVA_MATH_4_SHOT.as_bytes()),
            "4743061e8393cca1dcd805138b1ab15f0d72844392f2cc5aae511e978cced3a3"
        );
    }

    #[test]
    fn zero_shot_and_chat() {
        let r = PromptTemplate::R1.render("Find x.", Language::Zh, FewShotStyle::Cmath);
        assert_eq!(
            text(r),
            "Find x.\nPlease reason step by step, and put your final answer within \\boxed{}."
        );
        let c = PromptTemplate::Chat.render("求x。", Language::Zh, FewShotStyle::Cmath);
        assert_eq!(
            c.input,
            Prompt::Messages(vec![Message::user(
                "求x。\n请通过逐步推理来解答问题，并把最终答案放置于\\boxed{}中。"
            )])
        );
        assert_eq!(
            text(PromptTemplate::Plain.render("p", Language::En, FewShotStyle::Gsm8k)),
            "p"
        );
        for t in ["r1", "fewshot-cot", "plain", "chat"] {
            assert_eq!(PromptTemplate::parse(t).unwrap().name(), t);
        }
        assert!(PromptTemplate::parse("zero").is_err());
    }
}
