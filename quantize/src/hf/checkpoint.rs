//! A Hugging Face model folder's weights as `save_pretrained` writes them:
//! `model.safetensors`, or the shards `model.safetensors.index.json` maps tensor names to.
//! Memory-mapped; each tensor is read once, checked against the shape the architecture's
//! code expects, and widened to f32 (f32, f16 and bf16 checkpoints).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Where the tensor data starts (after the length word and the JSON header).
    data_at: usize,
    meta: Metadata,
}

/// The weights of one model folder.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name → shard.
    names: HashMap<String, usize>,
    /// Values already read or derived, by key: graphs that hold the same weights (a
    /// decoder's prefill and step, a tied head) share one copy.
    memo: RefCell<HashMap<String, Arc<Vec<f32>>>>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

impl Checkpoint {
    /// Opens `dir`'s safetensors file(s).
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX);
        let files: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(&index, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad(&index, "no weight_map"))?;
            let mut files: Vec<PathBuf> = Vec::new();
            for f in map.values() {
                let f = f
                    .as_str()
                    .ok_or_else(|| bad(&index, "a shard name is not text"))?;
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(bad(&index, format!("shard {f:?} is outside the folder")));
                }
                let p = dir.join(f);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
            files
        } else {
            vec![dir.join(SINGLE)]
        };
        let mut shards = Vec::new();
        let mut names = HashMap::new();
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is read-only and lives as long as the checkpoint; a file
            // changed underneath while converting is outside what any reader can defend
            // against (the same holds for every memory-mapped model loader).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let (n, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| bad(&path, format!("not a safetensors file: {e}")))?;
            for name in meta.tensors().keys() {
                names.insert(name.clone(), shards.len());
            }
            shards.push(Shard {
                path,
                map,
                data_at: 8 + n,
                meta,
            });
        }
        Ok(Self {
            shards,
            names,
            memo: RefCell::default(),
        })
    }

    /// Tensor `name` as [`Checkpoint::get`] reads it, read once however many graphs
    /// ask for it.
    pub fn shared(&self, name: &str, shape: &[usize]) -> Result<Arc<Vec<f32>>> {
        self.memo(&format!("{name}{shape:?}"), || self.get(name, shape))
    }

    /// Values derived from the checkpoint (stacked, offset) under `key`, made once.
    pub fn memo(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<Arc<Vec<f32>>> {
        if let Some(v) = self.memo.borrow().get(key) {
            return Ok(v.clone());
        }
        let v = Arc::new(make()?);
        self.memo.borrow_mut().insert(key.to_owned(), v.clone());
        Ok(v)
    }

    /// The first of `prefixes` under which the checkpoint has `probe`: checkpoints name
    /// a model's parts after the transformers version that saved them.
    pub fn prefix_of(&self, prefixes: &[&'static str], probe: &str) -> Option<&'static str> {
        prefixes
            .iter()
            .copied()
            .find(|p| self.has(&format!("{p}{probe}")))
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let s = &self.shards[*self.names.get(name)?];
        s.meta.info(name).map(|i| i.shape.clone())
    }

    /// Tensor `name` as f32, which must have shape `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(&i) = self.names.get(name) else {
            let path = self.shards.first().map_or(Path::new(SINGLE), |s| &s.path);
            return Err(bad(path, format!("tensor {name} is missing")));
        };
        let s = &self.shards[i];
        let info = s
            .meta
            .info(name)
            .ok_or_else(|| bad(&s.path, format!("tensor {name} is missing")))?;
        if info.shape != shape {
            return Err(bad(
                &s.path,
                format!(
                    "tensor {name} has shape {:?}, the config says {shape:?}",
                    info.shape
                ),
            ));
        }
        let (a, b) = info.data_offsets;
        let bytes = s
            .map
            .get(s.data_at + a..s.data_at + b)
            .ok_or_else(|| bad(&s.path, format!("tensor {name} lies outside the file")))?;
        let n: usize = shape.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(bad(
                    &s.path,
                    format!("tensor {name} is {other:?}; f32, f16 or bf16 is needed"),
                ))
            }
        };
        if bytes.len() != n * width {
            return Err(bad(
                &s.path,
                format!("tensor {name} has the wrong byte size"),
            ));
        }
        Ok(match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }

    /// `[n]` or `None` when the checkpoint has no such tensor (optional biases).
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
