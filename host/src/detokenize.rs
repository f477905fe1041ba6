//! Token ids to text without a tokenizer: each token's bytes, worked out here from a
//! Hugging Face `tokenizer.json` and stored in an artifact (`VOCAB`), so a device that
//! carries only the runtime prints captions.
//!
//! Written by hand because the `tokenizers` crate decodes whole sequences to `String`
//! and so cannot give a token's raw bytes: a byte-fallback token or a byte-level piece
//! of a multi-byte character is not valid UTF-8 alone. The decoders real captioners use
//! are covered — byte-level BPE (GPT-2, SmolLM, Qwen) and SentencePiece's metaspace with
//! byte fallback (Llama, Gemma, Mistral); [`TokenBytes::check`] then compares the
//! table with the tokenizer's own decoding token by token, so a decoder this file does
//! not know is refused rather than stored wrong.

use serde_json::Value;
use tokenizers::Tokenizer;

/// Each token's bytes in generated text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBytes {
    /// Indexed by token id; special tokens are empty (they are skipped in text).
    pub tokens: Vec<Vec<u8>>,
    /// The decoder drops one leading space from the text (SentencePiece's prefix space).
    pub strips_leading_space: bool,
}

/// One step of a `tokenizer.json` decoder this file reproduces.
enum Step {
    ByteLevel,
    Replace {
        from: String,
        to: String,
    },
    ByteFallback,
    Fuse,
    /// Strip leading spaces from the (fused) text.
    StripStart(usize),
    Metaspace {
        replacement: char,
        strips_first: bool,
    },
}

fn steps(decoder: &Value) -> Result<Vec<Step>, String> {
    let kind = decoder
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a decoder without a type")?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    Ok(match kind {
        "Sequence" => {
            let parts = decoder
                .get("decoders")
                .and_then(Value::as_array)
                .ok_or("a Sequence decoder without decoders")?;
            let mut out = Vec::new();
            for p in parts {
                out.extend(steps(p)?);
            }
            out
        }
        "ByteLevel" => vec![Step::ByteLevel],
        "ByteFallback" => vec![Step::ByteFallback],
        "Fuse" => vec![Step::Fuse],
        "Replace" => {
            let from = decoder
                .get("pattern")
                .and_then(|p| str_of(p, "String"))
                .ok_or("a Replace decoder with a regex pattern")?;
            let to = str_of(decoder, "content").ok_or("a Replace decoder without content")?;
            vec![Step::Replace { from, to }]
        }
        "Strip" => {
            if str_of(decoder, "content").as_deref() != Some(" ") {
                return Err("a Strip decoder of something other than spaces".into());
            }
            let stop = decoder.get("stop").and_then(Value::as_u64).unwrap_or(0);
            if stop != 0 {
                return Err("a Strip decoder that strips trailing characters".into());
            }
            let start = decoder.get("start").and_then(Value::as_u64).unwrap_or(0);
            vec![Step::StripStart(start as usize)]
        }
        "Metaspace" => {
            let replacement = str_of(decoder, "replacement")
                .and_then(|r| r.chars().next())
                .unwrap_or('▁');
            // `prepend_scheme` since tokenizers 0.15, `add_prefix_space` before it.
            let strips_first = match str_of(decoder, "prepend_scheme").as_deref() {
                Some("never") => false,
                Some(_) => true,
                None => decoder
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            };
            vec![Step::Metaspace {
                replacement,
                strips_first,
            }]
        }
        other => return Err(format!("a {other} decoder")),
    })
}

/// GPT-2's byte-to-character map, inverted: printable bytes stand for themselves, the
/// others for the characters from U+0100 on, in byte order.
fn byte_level_chars() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).expect("below U+0200")
            };
            (c, b)
        })
        .collect()
}

/// `<0xAB>`: SentencePiece's token for one raw byte.
fn fallback_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

impl TokenBytes {
    /// The table for `tokenizer` (whose `tokenizer.json` is `json`), checked against the
    /// tokenizer's own decoding; `Err` says why no table can be made.
    pub fn new(tokenizer: &Tokenizer, json: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let steps = match v.get("decoder") {
            Some(d) if !d.is_null() => steps(d)?,
            _ => return Err("the tokenizer has no decoder".into()),
        };
        let mut strips_leading_space = false;
        let mut fused = false;
        for s in &steps {
            match s {
                Step::Fuse | Step::ByteLevel => fused = true,
                Step::StripStart(n) if *n > 1 => {
                    return Err(format!("a Strip decoder of {n} leading spaces"))
                }
                Step::StripStart(1) if !fused => {
                    return Err("a Strip decoder applied to every token".into())
                }
                Step::StripStart(n) => strips_leading_space |= *n == 1,
                Step::Metaspace { strips_first, .. } => strips_leading_space |= strips_first,
                _ => {}
            }
        }
        let chars = byte_level_chars();
        let specials = tokenizer.get_added_tokens_decoder();
        let count = tokenizer.get_vocab_size(true);
        let mut tokens = Vec::with_capacity(count);
        for id in 0..count as u32 {
            let Some(token) = tokenizer.id_to_token(id) else {
                tokens.push(Vec::new());
                continue;
            };
            if specials.get(&id).is_some_and(|t| t.special) {
                tokens.push(Vec::new());
                continue;
            }
            let mut text = token;
            let mut bytes = None;
            for s in &steps {
                match s {
                    Step::Replace { from, to } => text = text.replace(from.as_str(), to),
                    Step::Metaspace { replacement, .. } => text = text.replace(*replacement, " "),
                    Step::ByteFallback => bytes = fallback_byte(&text).map(|b| vec![b]),
                    // As the crate's ByteLevel decoder: a token with a character outside
                    // the map stays as its UTF-8.
                    Step::ByteLevel => {
                        bytes = Some(
                            text.chars()
                                .map(|c| chars.get(&c).copied())
                                .collect::<Option<Vec<u8>>>()
                                .unwrap_or_else(|| text.as_bytes().to_vec()),
                        )
                    }
                    Step::Fuse | Step::StripStart(_) => {}
                }
                if bytes.is_some() {
                    break;
                }
            }
            tokens.push(bytes.unwrap_or_else(|| text.into_bytes()));
        }
        let table = Self {
            tokens,
            strips_leading_space,
        };
        table.check(tokenizer)?;
        Ok(table)
    }

    /// The text of `ids`, as a device makes it from the stored table.
    pub fn text(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut strip = self.strips_leading_space;
        for &id in ids {
            let mut piece = self.tokens.get(id as usize).map_or(&[][..], |t| &t[..]);
            if strip && !piece.is_empty() {
                strip = false;
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Every token alone gives the tokenizer's text (skipping the tokens whose text is
    /// not whole characters: pieces of a multi-byte character).
    pub fn check(&self, tokenizer: &Tokenizer) -> Result<(), String> {
        for id in 0..self.tokens.len() as u32 {
            self.check_ids(tokenizer, &[id])?;
        }
        Ok(())
    }

    /// `ids` give the tokenizer's text (special tokens skipped).
    pub fn check_ids(&self, tokenizer: &Tokenizer, ids: &[u32]) -> Result<(), String> {
        let want = tokenizer
            .decode(ids, true)
            .map_err(|e| format!("the tokenizer cannot decode {ids:?}: {e}"))?;
        let got = self.text(ids);
        if want != got && !(ids.len() == 1 && want.contains('\u{FFFD}')) {
            return Err(format!(
                "token ids {ids:?} decode to {want:?}, the table gives {got:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_map_is_gpt2s() {
        let m = byte_level_chars();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
        assert_eq!(m[&'\u{0100}'], 0);
    }

    #[test]
    fn fallback_bytes() {
        assert_eq!(fallback_byte("<0x0A>"), Some(10));
        assert_eq!(fallback_byte("<0xE2>"), Some(0xE2));
        assert_eq!(fallback_byte("<0x0>"), None);
        assert_eq!(fallback_byte("<0xZZ>"), None);
        assert_eq!(fallback_byte("hello"), None);
    }

    /// A SentencePiece-style tokenizer (Llama's decoder: Replace, ByteFallback, Fuse,
    /// Strip) and a byte-level one both give tables that decode as the tokenizer does,
    /// multi-byte characters and byte-fallback tokens included.
    #[test]
    fn tables_decode_as_the_tokenizer() {
        let llama = r#"{
          "version": "1.0", "truncation": null, "padding": null,
          "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
          "normalizer": null, "pre_tokenizer": null, "post_processor": null,
          "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": {"<s>": 0, "▁a": 1, "▁cat": 2, "<0xE2>": 3, "<0x80>": 4, "<0x94>": 5,
              "s": 6, "▁": 7},
            "merges": []}}"#;
        let tok = Tokenizer::from_bytes(llama.as_bytes()).unwrap();
        let t = TokenBytes::new(&tok, llama.as_bytes()).unwrap();
        assert!(t.strips_leading_space);
        assert_eq!(t.tokens[3], vec![0xE2]);
        assert!(t.tokens[0].is_empty());
        for ids in [&[0, 1, 2, 6][..], &[1, 3, 4, 5, 7, 2], &[2, 2]] {
            t.check_ids(&tok, ids).unwrap();
        }
        assert_eq!(t.text(&[0, 1, 2, 3, 4, 5]), "a cat—");

        let gpt2 = r#"{
          "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
          "normalizer": null, "pre_tokenizer": null, "post_processor": null,
          "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
            "use_regex": true},
          "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "Ġcat": 1, "Ċ": 2, "âĢ": 3, "Ķ": 4}, "merges": []}}"#;
        let tok = Tokenizer::from_bytes(gpt2.as_bytes()).unwrap();
        let t = TokenBytes::new(&tok, gpt2.as_bytes()).unwrap();
        assert!(!t.strips_leading_space);
        t.check_ids(&tok, &[0, 1, 2, 3, 4, 1]).unwrap();
        assert_eq!(t.text(&[0, 1, 3, 4]), "a cat—");
    }

    #[test]
    fn unknown_decoders_are_refused() {
        let json = r###"{
          "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
          "normalizer": null, "pre_tokenizer": null, "post_processor": null,
          "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
          "model": {"type": "WordPiece", "unk_token": "[UNK]",
            "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": {"[UNK]": 0, "a": 1}}}"###;
        let tok = Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let err = TokenBytes::new(&tok, json.as_bytes()).unwrap_err();
        assert!(err.contains("WordPiece"), "{err}");
    }
}
