//! Output layers (`src/loss.cc`): the sigmoid and log lookup tables, the Huffman tree of
//! hierarchical softmax, the negative-sampling table, and top-k prediction for each loss.

use super::args::Loss;
use super::matrix::Matrix;

const SIGMOID_TABLE_SIZE: usize = 512;
const MAX_SIGMOID: f32 = 8.0;
const LOG_TABLE_SIZE: usize = 512;
/// fastText's `NEGATIVE_TABLE_SIZE`; we store the table as cumulative counts, not 10M ids.
const NEGATIVE_TABLE_SIZE: f64 = 10_000_000.0;

/// The lookup tables fastText computes once per loss.
#[derive(Debug, Clone)]
pub struct Tables {
    sigmoid: Vec<f32>,
    log: Vec<f32>,
}

impl Default for Tables {
    fn default() -> Self {
        let sigmoid = (0..=SIGMOID_TABLE_SIZE)
            .map(|i| {
                let x = (i as i64 * 2 * MAX_SIGMOID as i64) as f32 / SIGMOID_TABLE_SIZE as f32
                    - MAX_SIGMOID;
                (1.0 / (1.0 + f64::from((-x).exp()))) as f32
            })
            .collect();
        let log = (0..=LOG_TABLE_SIZE)
            .map(|i| ((i as f32 + 1e-5) / LOG_TABLE_SIZE as f32).ln())
            .collect();
        Self { sigmoid, log }
    }
}

impl Tables {
    #[inline]
    pub fn sigmoid(&self, x: f32) -> f32 {
        if x < -MAX_SIGMOID {
            0.0
        } else if x > MAX_SIGMOID {
            1.0
        } else {
            let i = ((x + MAX_SIGMOID) * SIGMOID_TABLE_SIZE as f32 / MAX_SIGMOID / 2.0) as usize;
            self.sigmoid[i.min(SIGMOID_TABLE_SIZE)]
        }
    }

    #[inline]
    pub fn log(&self, x: f32) -> f32 {
        if x > 1.0 {
            return 0.0;
        }
        let i = (x * LOG_TABLE_SIZE as f32) as usize;
        self.log[i.min(LOG_TABLE_SIZE)]
    }
}

/// `std_log`: the log fastText reports scores in (`log(x + 1e-5)`).
#[inline]
pub fn std_log(x: f32) -> f32 {
    (x + 1e-5).ln()
}

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: i32,
    left: i32,
    right: i32,
    count: i64,
    binary: bool,
}

/// Huffman tree over label counts (`HierarchicalSoftmaxLoss::buildTree`).
#[derive(Debug, Clone)]
pub struct HsTree {
    osz: usize,
    tree: Vec<Node>,
    pub paths: Vec<Vec<i32>>,
    pub codes: Vec<Vec<bool>>,
}

impl HsTree {
    pub fn new(counts: &[i64]) -> Self {
        let osz = counts.len();
        let n_nodes = (2 * osz).saturating_sub(1);
        let mut tree = vec![
            Node {
                parent: -1,
                left: -1,
                right: -1,
                count: 1_000_000_000_000_000,
                binary: false,
            };
            n_nodes
        ];
        for (node, &c) in tree.iter_mut().zip(counts) {
            node.count = c;
        }
        let mut leaf = osz as i64 - 1;
        let mut node = osz;
        for i in osz..n_nodes {
            let mut mini = [0usize; 2];
            for m in &mut mini {
                if leaf >= 0 && tree[leaf as usize].count < tree[node].count {
                    *m = leaf as usize;
                    leaf -= 1;
                } else {
                    *m = node;
                    node += 1;
                }
            }
            tree[i].left = mini[0] as i32;
            tree[i].right = mini[1] as i32;
            tree[i].count = tree[mini[0]].count + tree[mini[1]].count;
            tree[mini[0]].parent = i as i32;
            tree[mini[1]].parent = i as i32;
            tree[mini[1]].binary = true;
        }
        let mut paths = Vec::with_capacity(osz);
        let mut codes = Vec::with_capacity(osz);
        for i in 0..osz {
            let (mut path, mut code) = (Vec::new(), Vec::new());
            let mut j = i;
            while tree[j].parent != -1 {
                path.push(tree[j].parent - osz as i32);
                code.push(tree[j].binary);
                j = tree[j].parent as usize;
            }
            paths.push(path);
            codes.push(code);
        }
        Self {
            osz,
            tree,
            paths,
            codes,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dfs(
        &self,
        k: usize,
        threshold: f32,
        node: usize,
        score: f32,
        heap: &mut Vec<(f32, i32)>,
        hidden: &[f32],
        wo: &Matrix,
    ) {
        if score < std_log(threshold) {
            return;
        }
        if heap.len() == k && score < worst(heap) {
            return;
        }
        let n = self.tree[node];
        if n.left == -1 && n.right == -1 {
            push_k(heap, k, (score, node as i32));
            return;
        }
        let f = wo.dot_row(hidden, node - self.osz);
        let f = (1.0 / (1.0 + f64::from((-f).exp()))) as f32;
        self.dfs(
            k,
            threshold,
            n.left as usize,
            score + std_log(1.0 - f),
            heap,
            hidden,
            wo,
        );
        self.dfs(
            k,
            threshold,
            n.right as usize,
            score + std_log(f),
            heap,
            hidden,
            wo,
        );
    }
}

fn worst(heap: &[(f32, i32)]) -> f32 {
    heap.iter().map(|p| p.0).fold(f32::INFINITY, f32::min)
}

/// Keep the best `k` (score, label) pairs; k is small, so a linear scan beats a heap.
fn push_k(heap: &mut Vec<(f32, i32)>, k: usize, item: (f32, i32)) {
    heap.push(item);
    if heap.len() > k {
        let (wi, _) = heap
            .iter()
            .enumerate()
            .fold((0, f32::INFINITY), |(bi, bs), (i, p)| {
                if p.0 < bs { (i, p.0) } else { (bi, bs) }
            });
        heap.swap_remove(wi);
    }
}

/// Sort predictions best first; ties go to the lower label id.
fn sort_desc(heap: &mut [(f32, i32)]) {
    heap.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
}

/// Top-`k` labels as `(log-probability, label index)`, best first, for `hidden`
/// (`Loss::predict`, `HierarchicalSoftmaxLoss::predict`). `output` is scratch of size nlabels.
#[allow(clippy::too_many_arguments)]
pub fn predict(
    loss: Loss,
    tables: &Tables,
    tree: Option<&HsTree>,
    wo: &Matrix,
    hidden: &[f32],
    k: usize,
    threshold: f32,
    output: &mut Vec<f32>,
) -> Vec<(f32, i32)> {
    let mut heap = Vec::with_capacity(k + 1);
    if k == 0 {
        return heap;
    }
    match (loss, tree) {
        (Loss::Hs, Some(tree)) if tree.osz > 0 => {
            tree.dfs(k, threshold, 2 * tree.osz - 2, 0.0, &mut heap, hidden, wo);
        }
        _ => {
            compute_output(loss, tables, wo, hidden, output);
            for (i, &p) in output.iter().enumerate() {
                if p < threshold {
                    continue;
                }
                let s = std_log(p);
                if heap.len() == k && s < worst(&heap) {
                    continue;
                }
                push_k(&mut heap, k, (s, i as i32));
            }
        }
    }
    sort_desc(&mut heap);
    heap
}

/// Label probabilities (`computeOutput`): softmax for softmax; table sigmoid of each logit for
/// the binary-logistic losses.
pub fn compute_output(
    loss: Loss,
    tables: &Tables,
    wo: &Matrix,
    hidden: &[f32],
    output: &mut Vec<f32>,
) {
    let osz = wo.rows();
    output.clear();
    output.extend((0..osz).map(|i| wo.dot_row(hidden, i)));
    if loss == Loss::Softmax {
        softmax_in_place(output);
    } else {
        output.iter_mut().for_each(|v| *v = tables.sigmoid(*v));
    }
}

pub(crate) fn softmax_in_place(output: &mut [f32]) {
    let Some(&first) = output.first() else {
        return;
    };
    let max = output.iter().fold(first, |m, &v| m.max(v));
    let mut z = 0.0f32;
    for v in output.iter_mut() {
        *v = f64::from(*v - max).exp() as f32;
        z += *v;
    }
    output.iter_mut().for_each(|v| *v /= z);
}

/// Negative-sampling distribution: label `i` appears `ceil(sqrt(count_i) * 1e7 / z)` times
/// in fastText's table; we keep the cumulative sizes and binary-search a uniform draw.
#[derive(Debug, Clone)]
pub struct NegativeTable {
    cumulative: Vec<u64>,
}

impl NegativeTable {
    pub fn new(counts: &[i64]) -> Self {
        let z: f64 = counts.iter().map(|&c| (c as f64).sqrt()).sum();
        let mut total = 0u64;
        let cumulative = counts
            .iter()
            .map(|&c| {
                let c = (c as f64).sqrt() as f32 as f64;
                // `for (j = 0; j < c * SIZE / z; j++)` pushes ceil(c * SIZE / z) entries.
                total += (c * NEGATIVE_TABLE_SIZE / z).ceil().max(0.0) as u64;
                total
            })
            .collect();
        Self { cumulative }
    }

    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The label at table position `u` (< total).
    pub fn at(&self, u: u64) -> i32 {
        self.cumulative.partition_point(|&c| c <= u) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_table_is_close_to_sigmoid() {
        let t = Tables::default();
        for x in [-7.9f32, -1.0, 0.0, 0.5, 3.0] {
            let exact = 1.0 / (1.0 + (-x).exp());
            assert!((t.sigmoid(x) - exact).abs() < 0.01, "{x}");
        }
        assert_eq!(t.sigmoid(9.0), 1.0);
        assert_eq!(t.sigmoid(-9.0), 0.0);
    }

    #[test]
    fn huffman_tree_gives_frequent_labels_short_codes() {
        let tree = HsTree::new(&[100, 10, 5, 1]);
        assert_eq!(tree.paths[0].len(), 1);
        assert_eq!(tree.paths[3].len(), 3);
        assert!(
            tree.paths
                .iter()
                .all(|p| p.iter().all(|&n| (0..3).contains(&n)))
        );
    }

    #[test]
    fn negative_table_follows_sqrt_counts() {
        let t = NegativeTable::new(&[100, 25]);
        // sqrt: 10 and 5, so two thirds of the table is label 0.
        let n0 = t.cumulative[0] as f64 / t.total() as f64;
        assert!((n0 - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(t.at(0), 0);
        assert_eq!(t.at(t.total() - 1), 1);
    }
}
