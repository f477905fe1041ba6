//! Text to the text tower's `input_ids`, padded as SigLIP was trained.

use std::path::Path;

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use vlm_models::siglip::{Padding, TextConfig};

use crate::{Error, Result};

/// A tokenizer bound to one model's text rules. Whatever padding tokenizer.json itself
/// declares, the model's config decides: SigLIP pools the last position, so inputs are
/// always exactly `max_length` ids, truncated or right-padded with the pad id.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
}

impl TextEncoder {
    pub fn load(path: &Path, cfg: &TextConfig) -> Result<Self> {
        if !path.exists() {
            return Err(Error::NotFound {
                path: path.to_owned(),
            });
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
        Self::with_rules(tokenizer, cfg, path)
    }

    /// A tokenizer from `tokenizer.json` bytes (as stored in an artifact); `path` names
    /// their source in errors.
    pub fn from_bytes(json: &[u8], cfg: &TextConfig, path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
        Self::with_rules(tokenizer, cfg, path)
    }

    fn with_rules(mut tokenizer: Tokenizer, cfg: &TextConfig, path: &Path) -> Result<Self> {
        let Padding::MaxLength = cfg.padding;
        let pad_token =
            tokenizer
                .id_to_token(cfg.pad_token_id)
                .ok_or_else(|| Error::Tokenizer {
                    path: path.to_owned(),
                    msg: format!("pad_token_id {} is not in the vocabulary", cfg.pad_token_id),
                })?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(cfg.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: cfg.pad_token_id,
            pad_type_id: 0,
            pad_token,
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: cfg.max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer {
                path: path.to_owned(),
                msg: e.to_string(),
            })?;
        Ok(Self {
            tokenizer,
            max_length: cfg.max_length,
        })
    }

    /// Exactly `max_length` token ids for `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenize {
                text: text.to_owned(),
                msg: e.to_string(),
            })?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        if ids.len() != self.max_length {
            return Err(Error::Tokenize {
                text: text.to_owned(),
                msg: format!("got {} ids, expected {}", ids.len(), self.max_length),
            });
        }
        Ok(ids)
    }
}
