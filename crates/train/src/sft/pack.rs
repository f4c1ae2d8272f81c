//! Packing short examples into fixed-length rows, and rows into model batches.
//!
//! A packed row is several examples laid end to end; each example's positions restart at 0,
//! which the model reads as an example boundary (block-diagonal attention, no attention across
//! examples; see `Model::hidden`). Packed and unpacked batches therefore give the same loss.
//! Rows are filled best-fit decreasing (TRL's `packing_strategy = "bfd"`): examples sorted by
//! length, each placed in the fullest row that still has room.

use reasonlab_model::{PadSide, TokenBatch};

use super::data::Encoded;

/// Indices of the examples in each row, every row at most `seq_len` tokens.
/// Examples longer than `seq_len` get a row of their own (callers truncate first).
pub fn pack_best_fit(lengths: &[usize], seq_len: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties by index so the result is deterministic.
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    // Remaining room → rows, as a sorted list of (room, row).
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut room: std::collections::BTreeSet<(usize, usize)> = Default::default();
    for i in order {
        let len = lengths[i];
        let fit = room.range((len, 0)..).next().copied();
        match fit {
            Some((r, row)) => {
                room.remove(&(r, row));
                rows[row].push(i);
                room.insert((r - len, row));
            }
            None => {
                rows.push(vec![i]);
                room.insert((seq_len.saturating_sub(len), rows.len() - 1));
            }
        }
    }
    rows
}

/// A model batch with its loss mask over the (b, t − 1) log-prob grid.
#[derive(Debug, Clone, PartialEq)]
pub struct LossBatch {
    pub batch: TokenBatch,
    /// Row-major (b, t − 1): 1 where the target token is trained on.
    pub loss_mask: Vec<f32>,
    /// Number of target tokens (sum of `loss_mask`).
    pub targets: usize,
}

/// Lay out `rows` (each a list of examples, concatenated) as a right-padded batch.
pub fn batch_rows(rows: &[Vec<&Encoded>], pad_id: u32) -> LossBatch {
    let seqs: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.iter().flat_map(|e| e.ids.iter().copied()).collect())
        .collect();
    let mut batch = TokenBatch::pad(&seqs, pad_id, PadSide::Right);
    let t = batch.t;
    let l = t.saturating_sub(1);
    let mut loss_mask = vec![0f32; batch.b * l];
    let mut targets = 0;
    for (row, examples) in rows.iter().enumerate() {
        let mut col = 0;
        for e in examples {
            for (i, &train) in e.loss.iter().enumerate() {
                batch.positions[row * t + col + i] = i as u32;
                // Token i of the example is predicted at log-prob column (col + i − 1); the
                // first token of an example is never a target.
                if i > 0 && train {
                    loss_mask[row * l + col + i - 1] = 1.0;
                    targets += 1;
                }
            }
            col += e.len();
        }
    }
    LossBatch {
        batch,
        loss_mask,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_fills_rows_and_keeps_every_example_once() {
        let lengths = [7, 3, 5, 2, 8, 1, 4];
        let rows = pack_best_fit(&lengths, 10);
        let mut seen: Vec<usize> = rows.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for r in &rows {
            assert!(r.iter().map(|&i| lengths[i]).sum::<usize>() <= 10);
        }
        // 30 tokens into rows of 10: best-fit needs exactly 3.
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn positions_restart_and_first_tokens_are_not_targets() {
        let a = Encoded {
            ids: vec![1, 2, 3],
            loss: vec![false, true, true],
        };
        let b = Encoded {
            ids: vec![4, 5],
            loss: vec![true, true],
        };
        let lb = batch_rows(&[vec![&a, &b]], 0);
        assert_eq!(lb.batch.positions, vec![0, 1, 2, 0, 1]);
        // targets: 2, 3 (from a), 5 (from b); 4 starts b and is not predicted from a.
        assert_eq!(lb.loss_mask, vec![1.0, 1.0, 0.0, 1.0]);
        assert_eq!(lb.targets, 3);
    }
}
