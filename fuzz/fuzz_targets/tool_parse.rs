//! Fuzzes what reads model-written text around tool calls: finding a pending call, the program
//! of a program-of-thought completion, the output blocks to mask and count, for every format.
//! Any input must return without panicking, and every span must lie on character boundaries
//! inside the text. Run with `scripts/fuzz.sh tool_parse SECONDS`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reasonlab_sandbox::rewards::program_of;
use reasonlab_sandbox::tools::{ToolFormat, ToolStats};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tags = ToolFormat::Tags {
        code_open: "<code>".into(),
        code_close: "</code>".into(),
        output_open: "<output>".into(),
        output_close: "</output>".into(),
    };
    for format in [ToolFormat::Pot, ToolFormat::Tora, tags] {
        if let Some(code) = format.pending_call(text) {
            assert!(text.contains(code));
        }
        let _ = format.program(text);
        for span in format.output_spans(text) {
            assert!(span.start <= span.end && span.end <= text.len());
            assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        }
        let mut stats = ToolStats::default();
        stats.add(&format, text);
        assert!(stats.timeouts <= stats.errors && stats.errors <= stats.calls);
        assert_eq!(stats.calls, format.count_outputs(text));
    }
    let _ = program_of(text);
});
