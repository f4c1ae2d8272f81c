//! The code rewards on known programs.

use std::path::Path;
use std::time::Duration;

use reasonlab_reward::{Reward, Sample};
use reasonlab_sandbox::rewards::{CodeTests, PotAnswer, program_of};
use reasonlab_sandbox::{Isolation, Limits, Sandbox};
use serde_json::json;

fn sandbox() -> Sandbox {
    let limits = Limits {
        timeout: Duration::from_secs(2),
        preload: vec![],
        ..Limits::default()
    };
    Sandbox::new(Path::new("python3"), limits, Isolation::Required, 2)
        .unwrap_or_else(|e| panic!("THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}"))
}

fn score(
    r: &dyn Reward,
    completion: &str,
    gold: Option<&str>,
    extra: serde_json::Value,
) -> Option<f64> {
    let extra = extra.as_object().cloned();
    r.score(&Sample {
        completion,
        gold,
        extra: extra.as_ref(),
        ..Sample::default()
    })
}

fn fenced(code: &str) -> String {
    format!(
        "<think>\nI will write code.\n```python\nprint('draft')\n```\n</think>\nHere:\n```python\n{code}\n```\n"
    )
}

#[test]
fn the_program_is_the_last_block_of_the_answer() {
    assert_eq!(program_of(&fenced("x = 1")), Some("x = 1\n"));
    assert_eq!(program_of("no code at all"), None);
    assert_eq!(program_of("<think>```python\nx\n```</think> none"), None);
}

#[test]
fn stdin_stdout_tests_score_the_fraction_passed() {
    let r = CodeTests::new("code", sandbox());
    let cases = json!({"verification_info": {"test_cases": [
        {"input": "3\n", "output": "6\n"},
        {"input": "5", "output": "10"},
    ]}});
    let double = fenced("n = int(input())\nprint(n * 2)");
    assert_eq!(score(&r, &double, None, cases.clone()), Some(1.0));
    let half = fenced("n = int(input())\nprint(n * 2 if n < 4 else 0)");
    assert_eq!(score(&r, &half, None, cases.clone()), Some(0.5));
    let wrong = fenced("print('no')");
    assert_eq!(score(&r, &wrong, None, cases.clone()), Some(0.0));
    assert_eq!(score(&r, "I cannot code.", None, cases.clone()), Some(0.0));
    let hang = fenced("while True:\n    pass");
    assert_eq!(score(&r, &hang, None, cases), Some(0.0));
    // The next program's stdin is its own test's input again, not the last one's.
    let flat = json!({"test_cases": [{"input": "7", "output": "14"}]});
    assert_eq!(score(&r, &double, None, flat), Some(1.0));
}

#[test]
fn assert_tests_pass_or_fail_as_a_whole() {
    let r = CodeTests::new("code", sandbox());
    let tests = json!({"test": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"});
    assert_eq!(
        score(
            &r,
            &fenced("def add(a, b):\n    return a + b"),
            None,
            tests.clone()
        ),
        Some(1.0)
    );
    assert_eq!(
        score(
            &r,
            &fenced("def add(a, b):\n    return a - b"),
            None,
            tests.clone()
        ),
        Some(0.0)
    );
    assert_eq!(
        score(&r, &fenced("x = 1"), None, json!({})),
        None,
        "no tests: not applicable"
    );
}

#[test]
fn pot_answers_are_verified_from_the_printed_output() {
    let r = PotAnswer::new("pot", sandbox());
    let eggs = fenced("def solution():\n    return (16 - 3 - 4) * 2\nprint(solution())");
    assert_eq!(score(&r, &eggs, Some("18"), json!({})), Some(1.0));
    let off = fenced("print(17)");
    assert_eq!(score(&r, &off, Some("18"), json!({})), Some(0.0));
    let frac = fenced("from fractions import Fraction\nprint(Fraction(1, 2))");
    assert_eq!(score(&r, &frac, Some("\\frac{1}{2}"), json!({})), Some(1.0));
    assert_eq!(score(&r, &eggs, None, json!({})), None);
}
