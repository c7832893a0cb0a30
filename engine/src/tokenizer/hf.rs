//! Reading a Hugging Face `tokenizer.json`: the parts ossa needs (vocabulary as bytes, added
//! tokens, the pipeline shape), and the `tokenizers` library as the general encoder.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString};

use super::bpe::O200K_PATTERN;
use super::error::TokenizerError;

/// The fields of `tokenizer.json` that decide how ossa encodes and decodes. `merges` is
/// skipped here (the `tokenizers` library reads it when it is the encoder).
#[derive(Deserialize)]
pub(crate) struct TokenizerJson {
    #[serde(default)]
    pub added_tokens: Vec<AddedTokenJson>,
    pub normalizer: Option<Value>,
    pub pre_tokenizer: Option<Value>,
    pub decoder: Option<Value>,
    pub model: ModelJson,
}

#[derive(Deserialize)]
pub(crate) struct AddedTokenJson {
    pub id: u32,
    pub content: String,
    #[serde(default)]
    pub single_word: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    #[serde(default)]
    pub normalized: bool,
    #[serde(default)]
    pub special: bool,
}

/// Every field is optional: a missing one takes its `Default`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ModelJson {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub vocab: HashMap<String, u32>,
    pub ignore_merges: bool,
    pub byte_fallback: bool,
    pub dropout: Option<f64>,
    pub continuing_subword_prefix: Option<String>,
    pub end_of_word_suffix: Option<String>,
}

impl TokenizerJson {
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Self, TokenizerError> {
        serde_json::from_slice(bytes).map_err(|source| TokenizerError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Why this file cannot be read as a byte-level BPE (the only kind gpt-oss uses), if so.
    pub(crate) fn byte_level_problem(&self) -> Option<String> {
        if self.model.kind.as_deref() != Some("BPE") {
            return Some(format!(
                "model type is {:?}, expected \"BPE\"",
                self.model.kind.as_deref().unwrap_or("missing")
            ));
        }
        if self.model.byte_fallback {
            return Some("BPE byte_fallback is set; ossa supports byte-level BPE only".into());
        }
        match self
            .decoder
            .as_ref()
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
        {
            Some("ByteLevel") => {}
            other => return Some(format!("decoder is {other:?}, expected \"ByteLevel\"")),
        }
        for token in &self.added_tokens {
            if token.single_word || token.lstrip || token.rstrip || token.normalized {
                return Some(format!(
                    "added token {:?} (id {}) uses single_word/lstrip/rstrip/normalized matching, which ossa does not implement",
                    token.content, token.id
                ));
            }
            if !token.special {
                return Some(format!(
                    "added token {:?} (id {}) is not special",
                    token.content, token.id
                ));
            }
        }
        None
    }

    /// Whether the pipeline is exactly o200k's: no normalizer, the o200k split then byte-level
    /// mapping, BPE that looks whole pieces up first (`ignore_merges`).
    pub(crate) fn is_o200k_pipeline(&self) -> bool {
        let model = &self.model;
        if !model.ignore_merges
            || model.dropout.is_some()
            || model
                .continuing_subword_prefix
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            || model
                .end_of_word_suffix
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            || self.normalizer.as_ref().is_some_and(|n| !n.is_null())
        {
            return false;
        }
        let Some(pre) = &self.pre_tokenizer else {
            return false;
        };
        if pre.get("type").and_then(Value::as_str) != Some("Sequence") {
            return false;
        }
        let Some([split, byte_level]) = pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        else {
            return false;
        };
        split.get("type").and_then(Value::as_str) == Some("Split")
            && split.pointer("/pattern/Regex").and_then(Value::as_str) == Some(O200K_PATTERN)
            && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
            && split.get("invert").and_then(Value::as_bool) == Some(false)
            && byte_level.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && byte_level.get("add_prefix_space").and_then(Value::as_bool) == Some(false)
            && byte_level.get("use_regex").and_then(Value::as_bool) == Some(false)
    }
}

/// GPT-2's byte-level alphabet: the character each byte is written as in the vocabulary.
pub(crate) fn byte_level_char_to_byte() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let ch = if printable {
            char::from(byte)
        } else {
            let ch = char::from_u32(256 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER);
            shifted += 1;
            ch
        };
        map.insert(ch, byte);
    }
    map
}

/// The `tokenizers` library as the encoder of ordinary text (special tokens are split off by
/// the caller, so added-token matching never runs here).
pub(crate) struct HfEncoder {
    tokenizer: tokenizers::Tokenizer,
}

impl std::fmt::Debug for HfEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfEncoder").finish_non_exhaustive()
    }
}

impl HfEncoder {
    pub(crate) fn load(path: &Path, bytes: &[u8]) -> Result<Self, TokenizerError> {
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TokenizerError::HuggingFace {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self { tokenizer })
    }

    /// Normalizer, pre-tokenizer and model, without the added-vocabulary pass.
    pub(crate) fn encode_ordinary_into(
        &self,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        use tokenizers::{Model, Normalizer, PreTokenizer};
        let encode_error = |e: tokenizers::Error| TokenizerError::Encode(e.to_string());
        let mut pretokenized = PreTokenizedString::from(text);
        if let Some(normalizer) = self.tokenizer.get_normalizer() {
            pretokenized
                .normalize(|s| normalizer.normalize(s))
                .map_err(encode_error)?;
        }
        if let Some(pre_tokenizer) = self.tokenizer.get_pre_tokenizer() {
            pre_tokenizer
                .pre_tokenize(&mut pretokenized)
                .map_err(encode_error)?;
        }
        let model = self.tokenizer.get_model();
        pretokenized
            .tokenize(|s| model.tokenize(s.get()))
            .map_err(encode_error)?;
        for (_, _, tokens) in pretokenized.get_splits(OffsetReferential::Original, OffsetType::None)
        {
            if let Some(tokens) = tokens {
                out.extend(tokens.iter().map(|t| t.id));
            }
        }
        Ok(())
    }
}
