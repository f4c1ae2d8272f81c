//! Safetensors checkpoints in the Hugging Face layout: one `model.safetensors`, or shards
//! `model-0000x-of-0000y.safetensors` listed by `model.safetensors.index.json`.
//!
//! Files are memory-mapped and each tensor is converted to `f32` on demand (F32, BF16, F16).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use crate::error::ModelError;

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset where tensor data starts (8 + header length).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// An opened checkpoint: every tensor name mapped to the shard that holds it.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    location: HashMap<String, usize>,
}

impl Checkpoint {
    /// Open the weights of an HF model directory.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            shard_files(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut location = HashMap::new();
        for path in files {
            let shard = open_shard(&path)?;
            for name in shard.tensors.keys() {
                location.insert(name.clone(), shards.len());
            }
            shards.push(shard);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            location,
        })
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The raw little-endian bytes of `name` and their element width (4: f32; 2: bf16 or
    /// f16, `bf16` telling which), checked against the `expected` shape.
    fn raw(&self, name: &str, expected: &[usize]) -> Result<(&[u8], Dtype), ModelError> {
        let shard = self
            .location
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.into(),
                dir: self.dir.clone(),
            })?;
        let info = &shard.tensors[name];
        if info.shape != expected {
            return Err(ModelError::Shape {
                name: name.into(),
                file: shard.path.clone(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        let bytes = shard
            .mmap
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| ModelError::Safetensors {
                path: shard.path.clone(),
                message: format!("tensor `{name}` points past the end of the file"),
            })?;
        let numel: usize = expected.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => {
                return Err(ModelError::Dtype {
                    name: name.into(),
                    file: shard.path.clone(),
                    found: format!("{other:?}"),
                });
            }
        };
        if bytes.len() != numel * width {
            return Err(ModelError::Safetensors {
                path: shard.path.clone(),
                message: format!(
                    "tensor `{name}` has {} bytes, expected {}",
                    bytes.len(),
                    numel * width
                ),
            });
        }
        Ok((bytes, info.dtype))
    }

    /// The tensor `name` as f32, checked against `expected` shape; converted in parallel
    /// straight from the memory map.
    pub fn tensor_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
        use rayon::prelude::*;
        let (bytes, dtype) = self.raw(name, expected)?;
        let convert = converter(dtype);
        let n = expected.iter().product::<usize>();
        Ok((0..n).into_par_iter().map(|i| convert(bytes, i)).collect())
    }

    /// The (rows, cols) matrix `name` as f32 in (cols, rows) layout, converted and transposed
    /// in one pass (32 × 32 tiles, blocks of output rows in parallel): a 1.5B checkpoint's
    /// matrices never exist twice in memory.
    pub fn tensor_f32_transposed(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let (bytes, dtype) = self.raw(name, &[rows, cols])?;
        let convert = converter(dtype);
        Ok(transpose_with(rows, cols, |i| convert(bytes, i)))
    }
}

/// The (rows, cols) row-major matrix whose element `i` is `get(i)`, as (cols, rows): 32 × 32
/// tiles (source and destination stay in cache), blocks of output rows in parallel.
pub(crate) fn transpose_with(
    rows: usize,
    cols: usize,
    get: impl Fn(usize) -> f32 + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(block, chunk)| {
            let c0 = block * TILE;
            let width = chunk.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - r0);
                for c in 0..width {
                    let dst = &mut chunk[c * rows + r0..c * rows + r0 + height];
                    for (r, d) in dst.iter_mut().enumerate() {
                        *d = get((r0 + r) * cols + c0 + c);
                    }
                }
            }
        });
    out
}

/// Element `i` of a little-endian f32 / bf16 / f16 byte buffer as f32.
fn converter(dtype: Dtype) -> fn(&[u8], usize) -> f32 {
    match dtype {
        Dtype::F32 => {
            |b, i| f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        }
        Dtype::BF16 => |b, i| half::bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
        _ => |b, i| half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
    }
}

fn shard_files(index: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Index {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Index {
            path: index.to_path_buf(),
            message: "missing object `weight_map`".into(),
        })?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| ModelError::Index {
            path: index.to_path_buf(),
            message: format!("weight_map[{name:?}] is not a string"),
        })?;
        if file.contains('/') || file.contains("..") {
            return Err(ModelError::Index {
                path: index.to_path_buf(),
                message: format!("shard name {file:?} must be a plain file name"),
            });
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files)
}

fn open_shard(path: &Path) -> Result<Shard, ModelError> {
    let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the map is read-only and we never hand out references that outlive it; a file
    // truncated underneath us is the same hazard every safetensors reader accepts.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (header_len, metadata): (usize, Metadata) = safetensors::SafeTensors::read_metadata(&mmap)
        .map_err(|e| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let tensors = metadata
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    Ok(Shard {
        path: path.to_path_buf(),
        mmap,
        data_start: 8 + header_len,
        tensors,
    })
}

/// Storage dtype for saving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    #[default]
    F32,
    Bf16,
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A tensor converted to its file dtype only when written.
struct LazyView<'a> {
    dtype: SaveDtype,
    shape: &'a [usize],
    values: &'a [f32],
}

impl safetensors::View for LazyView<'_> {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(match self.dtype {
            SaveDtype::F32 => self.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            SaveDtype::Bf16 => self
                .values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        })
    }
    fn data_len(&self) -> usize {
        self.values.len()
            * match self.dtype {
                SaveDtype::F32 => 4,
                SaveDtype::Bf16 => 2,
            }
    }
}

/// Write named f32 tensors to `path` as safetensors (`{"format": "pt"}` metadata), atomically
/// and streaming: one tensor's bytes at a time are held beside the values, where
/// [`to_safetensors_bytes`] holds the whole file (a 1.5B model in f32: 6 GB less peak memory).
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dtype: SaveDtype,
) -> Result<(), ModelError> {
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let views = tensors.iter().map(|(name, (shape, values))| {
        (
            name.as_str(),
            LazyView {
                dtype,
                shape,
                values,
            },
        )
    });
    reasonlab_core::fs::atomic_write_with(path, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp).map_err(std::io::Error::other)
    })
    .map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Serialise named f32 tensors into safetensors bytes (`{"format": "pt"}` metadata, which
/// transformers expects).
pub fn to_safetensors_bytes(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    dtype: SaveDtype,
) -> Result<Vec<u8>, ModelError> {
    let views: Vec<(String, OwnedView)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let (dtype, data) = match dtype {
                SaveDtype::F32 => (
                    Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                SaveDtype::Bf16 => (
                    Dtype::BF16,
                    values
                        .iter()
                        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                        .collect(),
                ),
            };
            (
                name.clone(),
                OwnedView {
                    dtype,
                    shape: shape.clone(),
                    data,
                },
            )
        })
        .collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(meta)).map_err(|e| {
        ModelError::Safetensors {
            path: PathBuf::from("(serialise)"),
            message: e.to_string(),
        }
    })
}
