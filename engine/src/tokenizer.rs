//! The o200k_harmony tokenizer of gpt-oss: text to token ids and back.
//!
//! A [`Tokenizer`] comes from a Hugging Face `tokenizer.json` ([`Tokenizer::from_file`],
//! [`Tokenizer::from_model_dir`]) or is built offline from the o200k vocabulary that the
//! `tiktoken-rs` crate ships plus harmony's special tokens ([`Tokenizer::o200k_harmony`]).
//! Nothing is ever downloaded.
//!
//! Two encoders exist:
//! - [`EncoderKind::Bpe`]: ossa's own o200k byte-pair encoder (linear-time pre-tokenization, tiktoken's
//!   merge order). Used for the built-in tokenizer, and for a `tokenizer.json` whose vocabulary
//!   and pipeline are exactly o200k's (the official gpt-oss files are).
//! - [`EncoderKind::HuggingFace`]: the `tokenizers` library (0.23.2, `onig`), for any other byte-level
//!   BPE file, or on request ([`EncoderPreference::HuggingFace`]).
//!
//! Decoding never goes through an encoder: every id maps to its bytes (special tokens to their
//! text), so decoding is exact and a [`StreamDecoder`] can release text without ever splitting a
//! UTF-8 character.
//!
//! The special tokens are openai-harmony's: ids 199998..=201088, with `<|reserved_201088|>` at
//! 201088 (tiktoken-rs's own `o200k_harmony` table stops at 201087). [`Tokenizer::vocab_size`] is
//! therefore 201089, one more than gpt-oss's embedding table; the model never emits id 201088.

mod bpe;
mod error;
mod hf;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;

pub use bpe::O200K_PATTERN;
use bpe::{BytePairEncoder, Pretokenizer};
pub use error::TokenizerError;
use hf::{HfEncoder, TokenizerJson};

/// Number of ordinary (byte-pair) tokens in o200k: ids 0..=199997.
pub const O200K_ORDINARY_TOKENS: u32 = 199_998;
/// First special-token id of o200k_harmony.
pub const HARMONY_FIRST_SPECIAL: u32 = 199_998;
/// Last special-token id of o200k_harmony (openai-harmony's table; tiktoken-rs stops one short).
pub const HARMONY_LAST_SPECIAL: u32 = 201_088;

/// The named special tokens of o200k_harmony; every other id in
/// [`HARMONY_FIRST_SPECIAL`]..=[`HARMONY_LAST_SPECIAL`] is `<|reserved_{id}|>`.
pub const HARMONY_NAMED_SPECIALS: [(&str, u32); 9] = [
    ("<|startoftext|>", 199_998),
    ("<|endoftext|>", 199_999),
    ("<|return|>", 200_002),
    ("<|constrain|>", 200_003),
    ("<|channel|>", 200_005),
    ("<|start|>", 200_006),
    ("<|end|>", 200_007),
    ("<|message|>", 200_008),
    ("<|call|>", 200_012),
];

/// Ids above this are refused when loading a file (a corrupt id would otherwise size the
/// id-to-bytes table).
const MAX_VOCAB_SIZE: usize = 16 << 20;

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// Which special-token texts [`Tokenizer::encode`] turns into their special ids. Text of any
/// other special token is encoded as ordinary text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedSpecial<'a> {
    /// Every special-token text is ordinary text (same as [`Tokenizer::encode_ordinary`]).
    None,
    /// Every special-token text becomes its id.
    All,
    /// Only these special-token texts become their ids.
    Only(&'a [&'a str]),
}

impl From<bool> for AllowedSpecial<'_> {
    fn from(all: bool) -> Self {
        if all {
            AllowedSpecial::All
        } else {
            AllowedSpecial::None
        }
    }
}

impl AllowedSpecial<'_> {
    fn permits(&self, text: &str) -> bool {
        match self {
            AllowedSpecial::None => false,
            AllowedSpecial::All => true,
            AllowedSpecial::Only(list) => list.contains(&text),
        }
    }
}

/// The encoder in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// ossa's o200k byte-pair encoder.
    Bpe,
    /// The `tokenizers` library.
    HuggingFace,
}

/// Which encoder [`Tokenizer::from_file_with`] may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderPreference {
    /// ossa's o200k encoder when the file is o200k (same vocabulary, pattern and pipeline),
    /// else the `tokenizers` library.
    #[default]
    Auto,
    /// Always the `tokenizers` library.
    HuggingFace,
}

/// Where a tokenizer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// Built from tiktoken-rs's o200k vocabulary and harmony's special tokens.
    Builtin,
    /// Loaded from this `tokenizer.json`.
    File(PathBuf),
}

/// Text to token ids and back; cheap to clone (shared, immutable).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    encoder: Encoder,
    table: TokenTable,
    specials: Specials,
    source: TokenizerSource,
}

enum Encoder {
    Bpe(BytePairEncoder),
    HuggingFace(Box<HfEncoder>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.inner.source)
            .field("encoder", &self.encoder_kind())
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.inner.specials.by_text.len())
            .finish()
    }
}

/// Every id's bytes in one buffer: id `i` is `bytes[offsets[i]..offsets[i + 1]]`; an id without
/// a token has an empty range (no real token is empty).
struct TokenTable {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl TokenTable {
    fn from_entries(entries: &[Option<Vec<u8>>]) -> Result<Self, String> {
        let total: usize = entries.iter().flatten().map(Vec::len).sum();
        let total32 =
            u32::try_from(total).map_err(|_| "vocabulary bytes exceed 4 GiB".to_string())?;
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(entries.len() + 1);
        offsets.push(0);
        for entry in entries {
            if let Some(entry) = entry {
                bytes.extend_from_slice(entry);
            }
            offsets.push(bytes.len() as u32);
        }
        debug_assert_eq!(bytes.len() as u32, total32);
        Ok(Self { bytes, offsets })
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let id = id as usize;
        if id >= self.len() {
            return None;
        }
        let (start, end) = (self.offsets[id] as usize, self.offsets[id + 1] as usize);
        (end > start).then(|| &self.bytes[start..end])
    }
}

/// Special tokens: text to id, id to flag, and a matcher for finding them in text.
struct Specials {
    by_text: FxHashMap<String, u32>,
    flags: Vec<bool>,
    matcher: Option<regex::Regex>,
}

impl Specials {
    fn new(tokens: Vec<(String, u32)>, vocab_size: usize) -> Result<Self, String> {
        let mut flags = vec![false; vocab_size];
        let mut by_text = FxHashMap::default();
        for (text, id) in &tokens {
            if let Some(flag) = flags.get_mut(*id as usize) {
                *flag = true;
            }
            if by_text.insert(text.clone(), *id).is_some() {
                return Err(format!("special token {text:?} is defined twice"));
            }
        }
        // Longest first, so a special token that is a prefix of another never wins over it.
        let mut texts: Vec<&String> = by_text.keys().collect();
        texts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let matcher = if texts.is_empty() {
            None
        } else {
            let pattern = texts
                .iter()
                .map(|t| regex::escape(t))
                .collect::<Vec<_>>()
                .join("|");
            Some(
                regex::RegexBuilder::new(&pattern)
                    .size_limit(64 << 20)
                    .build()
                    .map_err(|e| format!("special-token matcher: {e}"))?,
            )
        };
        Ok(Self {
            by_text,
            flags,
            matcher,
        })
    }
}

/// The special tokens of o200k_harmony, as openai-harmony defines them.
pub fn harmony_special_tokens() -> Vec<(String, u32)> {
    (HARMONY_FIRST_SPECIAL..=HARMONY_LAST_SPECIAL)
        .map(|id| {
            match HARMONY_NAMED_SPECIALS
                .iter()
                .find(|(_, named)| *named == id)
            {
                Some((text, _)) => ((*text).to_string(), id),
                None => (format!("<|reserved_{id}|>"), id),
            }
        })
        .collect()
}

/// The o200k vocabulary from tiktoken-rs: entry `r` is the bytes of rank `r`.
fn o200k_vocabulary() -> Result<Vec<Vec<u8>>> {
    let core = tiktoken_rs::o200k_base().map_err(|e| TokenizerError::Builtin(e.to_string()))?;
    (0..O200K_ORDINARY_TOKENS)
        .map(|rank| {
            core.decode_bytes(&[rank]).map_err(|e| {
                TokenizerError::Builtin(format!("tiktoken-rs has no o200k token {rank}: {e}"))
            })
        })
        .collect()
}

fn bpe_encoder(vocabulary: &[Vec<u8>]) -> Result<BytePairEncoder, String> {
    let mut ranks: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
    ranks.reserve(vocabulary.len());
    for (rank, bytes) in vocabulary.iter().enumerate() {
        if ranks
            .insert(bytes.clone().into_boxed_slice(), rank as u32)
            .is_some()
        {
            return Err(format!("token bytes {bytes:?} appear twice"));
        }
    }
    if let Some(byte) = (0..=255u8).find(|b| !ranks.contains_key([*b].as_slice())) {
        return Err(format!("single byte {byte:#04x} has no token"));
    }
    let pretokenizer = Pretokenizer::o200k().map_err(|e| format!("o200k pattern: {e}"))?;
    Ok(BytePairEncoder::new(ranks, pretokenizer))
}

impl Tokenizer {
    /// o200k_harmony built offline from tiktoken-rs's o200k vocabulary and openai-harmony's
    /// special tokens. Takes a few hundred milliseconds; clone the result rather than rebuild.
    pub fn o200k_harmony() -> Result<Self> {
        let vocabulary = o200k_vocabulary()?;
        let encoder = bpe_encoder(&vocabulary).map_err(TokenizerError::Builtin)?;
        Self::assemble(
            Encoder::Bpe(encoder),
            vocabulary,
            harmony_special_tokens(),
            TokenizerSource::Builtin,
        )
        .map_err(TokenizerError::Builtin)
    }

    /// Loads a `tokenizer.json`, choosing the encoder automatically ([`EncoderPreference::Auto`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with(path, EncoderPreference::Auto)
    }

    /// Loads a `tokenizer.json` with the given encoder preference.
    pub fn from_file_with(path: &Path, preference: EncoderPreference) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let json = TokenizerJson::parse(path, &bytes)?;
        let unsupported = |reason: String| TokenizerError::Unsupported {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(reason) = json.byte_level_problem() {
            return Err(unsupported(reason));
        }

        // Ordinary tokens as bytes, by id.
        let char_to_byte = hf::byte_level_char_to_byte();
        let max_id = json
            .model
            .vocab
            .values()
            .chain(json.added_tokens.iter().map(|t| &t.id))
            .copied()
            .max();
        let size = max_id.map_or(0, |m| m as usize + 1);
        if size > MAX_VOCAB_SIZE {
            return Err(unsupported(format!(
                "token id {} is beyond the largest supported ({MAX_VOCAB_SIZE})",
                size - 1
            )));
        }
        let mut entries: Vec<Option<Vec<u8>>> = vec![None; size];
        for (text, &id) in &json.model.vocab {
            let bytes = text
                .chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| {
                    unsupported(format!(
                        "vocabulary entry {text:?} (id {id}) is not byte-level text"
                    ))
                })?;
            if bytes.is_empty() {
                return Err(unsupported(format!("vocabulary entry {id} is empty")));
            }
            entries[id as usize] = Some(bytes);
        }
        let mut specials = Vec::with_capacity(json.added_tokens.len());
        for token in &json.added_tokens {
            if token.content.is_empty() {
                return Err(unsupported(format!("added token {} is empty", token.id)));
            }
            match &entries[token.id as usize] {
                Some(existing) if existing.as_slice() != token.content.as_bytes() => {
                    return Err(unsupported(format!(
                        "added token {:?} reuses id {} of vocabulary entry {:?}",
                        token.content,
                        token.id,
                        String::from_utf8_lossy(existing)
                    )));
                }
                _ => entries[token.id as usize] = Some(token.content.as_bytes().to_vec()),
            }
            specials.push((token.content.clone(), token.id));
        }

        let ordinary_count = json.model.vocab.len();
        let is_o200k = preference == EncoderPreference::Auto
            && json.is_o200k_pipeline()
            && ordinary_count == O200K_ORDINARY_TOKENS as usize
            && json
                .model
                .vocab
                .values()
                .all(|&id| id < O200K_ORDINARY_TOKENS);
        let source = TokenizerSource::File(path.to_path_buf());
        if is_o200k {
            let vocabulary = o200k_vocabulary()?;
            let same = vocabulary
                .iter()
                .enumerate()
                .all(|(id, bytes)| entries[id].as_deref() == Some(bytes.as_slice()));
            if same {
                tracing::debug!(path = %path.display(), "tokenizer.json is o200k: using ossa's BPE encoder");
                let encoder = bpe_encoder(&vocabulary).map_err(&unsupported)?;
                return Self::assemble_entries(Encoder::Bpe(encoder), entries, specials, source)
                    .map_err(unsupported);
            }
            tracing::debug!(path = %path.display(), "tokenizer.json has the o200k pipeline but another vocabulary");
        }
        let encoder = HfEncoder::load(path, &bytes)?;
        tracing::debug!(path = %path.display(), "using the tokenizers library");
        Self::assemble_entries(
            Encoder::HuggingFace(Box::new(encoder)),
            entries,
            specials,
            source,
        )
        .map_err(unsupported)
    }

    /// The tokenizer of a model directory: its `tokenizer.json` when there is one, else the
    /// built-in o200k_harmony.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let metadata = std::fs::metadata(dir).map_err(|source| TokenizerError::ModelDir {
            path: dir.to_path_buf(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(TokenizerError::ModelDir {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let file = dir.join("tokenizer.json");
        if file.is_file() {
            Self::from_file(&file)
        } else {
            tracing::info!(dir = %dir.display(), "no tokenizer.json: using the built-in o200k_harmony tokenizer");
            Self::o200k_harmony()
        }
    }

    fn assemble(
        encoder: Encoder,
        vocabulary: Vec<Vec<u8>>,
        specials: Vec<(String, u32)>,
        source: TokenizerSource,
    ) -> Result<Self, String> {
        let size = specials
            .iter()
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0)
            .max(vocabulary.len());
        let mut entries: Vec<Option<Vec<u8>>> = vocabulary.into_iter().map(Some).collect();
        entries.resize(size, None);
        for (text, id) in &specials {
            let slot = &mut entries[*id as usize];
            if slot.is_some() {
                return Err(format!("special token {text:?} reuses ordinary id {id}"));
            }
            *slot = Some(text.as_bytes().to_vec());
        }
        Self::assemble_entries(encoder, entries, specials, source)
    }

    fn assemble_entries(
        encoder: Encoder,
        entries: Vec<Option<Vec<u8>>>,
        specials: Vec<(String, u32)>,
        source: TokenizerSource,
    ) -> Result<Self, String> {
        let table = TokenTable::from_entries(&entries)?;
        let specials = Specials::new(specials, table.len())?;
        Ok(Self {
            inner: Arc::new(Inner {
                encoder,
                table,
                specials,
                source,
            }),
        })
    }

    /// The encoder in use.
    pub fn encoder_kind(&self) -> EncoderKind {
        match self.inner.encoder {
            Encoder::Bpe(_) => EncoderKind::Bpe,
            Encoder::HuggingFace(_) => EncoderKind::HuggingFace,
        }
    }

    /// Where this tokenizer came from.
    pub fn source(&self) -> &TokenizerSource {
        &self.inner.source
    }

    /// Number of ids (highest id + 1), special tokens included: 201089 for o200k_harmony.
    pub fn vocab_size(&self) -> usize {
        self.inner.table.len()
    }

    /// Encodes `text`; special-token texts permitted by `allowed` become their ids.
    pub fn encode<'a>(
        &self,
        text: &str,
        allowed: impl Into<AllowedSpecial<'a>>,
    ) -> Result<Vec<u32>> {
        let allowed = allowed.into();
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let matcher = match (&allowed, &self.inner.specials.matcher) {
            (AllowedSpecial::None, _) | (_, None) => None,
            (_, Some(matcher)) => Some(matcher),
        };
        let Some(matcher) = matcher else {
            self.encode_ordinary_into(text, &mut out)?;
            return Ok(out);
        };
        let mut segment_start = 0;
        let mut search_from = 0;
        while let Some(found) = matcher.find_at(text, search_from) {
            if allowed.permits(found.as_str()) {
                self.encode_ordinary_into(&text[segment_start..found.start()], &mut out)?;
                out.push(self.inner.specials.by_text[found.as_str()]);
                segment_start = found.end();
                search_from = found.end();
            } else {
                // A disallowed special-token text is ordinary text; look for one starting later.
                let next_char = text[found.start()..]
                    .chars()
                    .next()
                    .map_or(1, char::len_utf8);
                search_from = found.start() + next_char;
            }
        }
        self.encode_ordinary_into(&text[segment_start..], &mut out)?;
        Ok(out)
    }

    /// Encodes `text` with every special-token text treated as ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_ordinary_into(text, &mut out)?;
        Ok(out)
    }

    /// Appends the ordinary encoding of `text` to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        match &self.inner.encoder {
            Encoder::Bpe(encoder) => {
                encoder.encode_ordinary_into(text, out);
                Ok(())
            }
            Encoder::HuggingFace(encoder) => encoder.encode_ordinary_into(text, out),
        }
    }

    /// The bytes of one token (a special token's are its text), or `None` for an unknown id.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inner.table.get(id)
    }

    /// The concatenated bytes of `ids`; may be invalid UTF-8 (tokens can end mid-character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_bytes_into(ids, &mut out)?;
        Ok(out)
    }

    /// Appends the bytes of `ids` to `out`.
    pub fn decode_bytes_into(&self, ids: &[u32], out: &mut Vec<u8>) -> Result<()> {
        for &id in ids {
            let bytes = self.token_bytes(id).ok_or(TokenizerError::UnknownToken {
                id,
                vocab_size: self.vocab_size(),
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// The text of `ids` (special tokens as their text); an error when the bytes are not UTF-8.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?)
            .map_err(|source| TokenizerError::InvalidUtf8 { source })
    }

    /// The text of `ids` with every invalid UTF-8 sequence replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The id of a special token, by its text (`"<|start|>"`).
    pub fn token_id(&self, special: &str) -> Option<u32> {
        self.inner.specials.by_text.get(special).copied()
    }

    /// Whether `id` is a special token.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .specials
            .flags
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }

    /// All special tokens as (text, id), in id order.
    pub fn special_tokens(&self) -> Vec<(&str, u32)> {
        let mut all: Vec<(&str, u32)> = self
            .inner
            .specials
            .by_text
            .iter()
            .map(|(t, &id)| (t.as_str(), id))
            .collect();
        all.sort_by_key(|&(_, id)| id);
        all
    }

    /// A decoder for a stream of generated ids.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self.clone())
    }
}

/// Turns ids into text as they arrive, one token at a time, never splitting a UTF-8 character.
///
/// Bytes that cannot start or continue a character are released as U+FFFD (once per invalid
/// sequence, as [`String::from_utf8_lossy`] does), so malformed output never stalls the stream.
/// An incomplete character is held until the next token completes it, or until [`flush`].
///
/// [`flush`]: StreamDecoder::flush
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(tokenizer: Tokenizer) -> Self {
        Self {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self
            .tokenizer
            .token_bytes(id)
            .ok_or(TokenizerError::UnknownToken {
                id,
                vocab_size: self.tokenizer.vocab_size(),
            })?;
        self.pending.extend_from_slice(bytes);
        Ok(self.take_complete())
    }

    /// Bytes received that do not yet form a complete character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// Releases what is left; an incomplete character becomes U+FFFD.
    pub fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    fn take_complete(&mut self) -> String {
        let mut text = String::new();
        let mut consumed = 0;
        for chunk in self.pending.utf8_chunks() {
            text.push_str(chunk.valid());
            consumed += chunk.valid().len();
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            let is_last = consumed + invalid.len() == self.pending.len();
            if is_last && could_complete(invalid) {
                // The start of a character whose remaining bytes have not arrived yet.
                break;
            }
            text.push(char::REPLACEMENT_CHARACTER);
            consumed += invalid.len();
        }
        self.pending.drain(..consumed);
        text
    }
}

/// Whether `bytes` (an invalid sequence per `utf8_chunks`) is a proper prefix of a valid
/// character, so that more bytes could still complete it.
fn could_complete(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(e) if e.valid_up_to() == 0 && e.error_len().is_none())
}
