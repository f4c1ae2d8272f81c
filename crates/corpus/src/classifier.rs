//! File-level classifier operations behind `reasonlab classifier train | test | predict`,
//! with fastText's output formats so scripts written for fastText keep working.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::fasttext::meter::fmt_g;
use crate::fasttext::{Args, FastText, FastTextError, Meter, Scratch, TrainReport};
use crate::segment::Segmentation;

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FastTextError + '_ {
    move |source| FastTextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Train on `input` and save fastText `.bin` to `output`. With a segmentation other than
/// whitespace, the input is segmented line by line into a temporary file beside `output`
/// first (training threads seek into the file, as fastText's do).
pub fn train_file(
    input: &Path,
    output: &Path,
    args: &Args,
    segmentation: Segmentation,
) -> Result<TrainReport, FastTextError> {
    if segmentation == Segmentation::Whitespace {
        let (model, report) = crate::fasttext::train(input, args)?;
        model.save(output)?;
        return Ok(report);
    }
    let text = std::fs::read(input).map_err(io_err(input))?;
    let text = String::from_utf8_lossy(&text);
    let tmp = output.with_extension("segmented.tmp");
    std::fs::write(&tmp, segmentation.apply_lines(&text).as_bytes()).map_err(io_err(&tmp))?;
    let trained = crate::fasttext::train(&tmp, args);
    let _ = std::fs::remove_file(&tmp);
    let (model, report) = trained?;
    model.save(output)?;
    Ok(report)
}

fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, FastTextError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    let f = std::fs::File::open(path).map_err(|source| FastTextError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
}

/// `fasttext test MODEL FILE k threshold`: the meter; print `meter.general_metrics(k)`.
pub fn test_file(
    model: &Path,
    input: &Path,
    k: usize,
    threshold: f32,
    segmentation: Segmentation,
) -> Result<Meter, FastTextError> {
    let m = FastText::load(model)?;
    if segmentation == Segmentation::Whitespace {
        return m.test(open(input)?, k, threshold);
    }
    let mut text = Vec::new();
    open(input)?.read_to_end(&mut text).map_err(io_err(input))?;
    let text = String::from_utf8_lossy(&text);
    let segmented = segmentation.apply_lines(&text);
    m.test(std::io::Cursor::new(segmented.as_bytes()), k, threshold)
}

/// Format one line's predictions as `fasttext predict[-prob]` does.
pub fn format_predictions(model: &FastText, preds: &[(f32, i32)], prob: bool, out: &mut String) {
    for (i, &(lp, id)) in preds.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(
            model.dict.label(id).unwrap_or(b""),
        ));
        if prob {
            out.push(' ');
            out.push_str(&fmt_g(f64::from(lp.exp()), 6));
        }
    }
    out.push('\n');
}

/// `fasttext predict[-prob] MODEL FILE k threshold`, on `threads` threads; output lines stay
/// in input order. Returns the number of lines.
#[allow(clippy::too_many_arguments)]
pub fn predict_file(
    model: &Path,
    input: &Path,
    k: usize,
    threshold: f32,
    prob: bool,
    threads: usize,
    segmentation: Segmentation,
    out: &mut impl Write,
) -> Result<u64, FastTextError> {
    let m = FastText::load(model)?;
    let mut reader = open(input)?;
    let io = |source| FastTextError::Io {
        path: input.to_path_buf(),
        source,
    };
    let threads = threads.max(1);
    let mut n = 0u64;
    loop {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(8192);
        for _ in 0..8192 {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            batch.push(line);
        }
        if batch.is_empty() {
            break;
        }
        n += batch.len() as u64;
        let chunk = batch.len().div_ceil(threads);
        let texts: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(chunk)
                .map(|lines| {
                    let m = &m;
                    s.spawn(move || {
                        let mut scratch = Scratch::default();
                        let mut text = String::new();
                        for line in lines {
                            let eos = line.last() == Some(&b'\n');
                            // Invalid UTF-8 is predicted on its raw bytes, as fastText does.
                            let segmented =
                                std::str::from_utf8(line).map(|t| segmentation.apply(t));
                            let bytes = match &segmented {
                                Ok(t) => t.as_bytes(),
                                Err(_) => &line[..],
                            };
                            let preds = m.predict_bytes(bytes, eos, k, threshold, &mut scratch);
                            format_predictions(m, &preds, prob, &mut text);
                        }
                        text
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for t in texts {
            out.write_all(t.as_bytes()).map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(n)
}
