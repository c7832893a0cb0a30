//! Structured outputs: JSON constrained while sampling, inside the harmony stream.
//!
//! A schema (OpenAI's `response_format` / `text.format`, a `strict` function's parameters,
//! `ossa run --schema`) is compiled by `llguidance`, the constrained-decoding library llama.cpp
//! and vLLM use, over a token trie of ossa's own tokenizer. [`HarmonyMask`] is the engine's
//! [`LogitsMask`] for one generation: it follows the message headers the model writes and, only
//! inside the content of a message the schema is for (the `final` answer, or a commentary
//! message addressed `to=functions.NAME` of a strict function), lets through just the tokens
//! that keep the JSON valid. The chain of thought and the headers' text stay free. Inside
//! constrained content no special token is allowed except the message's end (`<|return|>` for
//! the answer, `<|call|>` for a call), and that one exactly when the grammar accepts.
//!
//! A header may not end in a message the client would be shown outside its schema: the agent
//! shows as answer text every message to nobody that is not `analysis` (a `commentary`
//! preamble, a channel the model made up), and its lenient parser turns a header that ends
//! without `<|message|>` into a message of its text. So, while a schema applies, the mask asks
//! the parser what each header-ending token would make and bans those that would let such a
//! message (or a strict function's call) through unconstrained.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use ossa_engine::tokenizer::Tokenizer;
use ossa_engine::{LogitsMask, SharedMask};
use serde_json::Value;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use crate::harmony::{HarmonyEncoding, Message, ParseMode, Role, StreamState, StreamableParser};

/// A schema llguidance cannot compile (an unsupported keyword, a bad `$ref`, not a schema).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// ossa's tokenizer as llguidance sees it: every token's bytes (special tokens as
/// `0xFF` + their text, toktrie's convention) and ossa's own BPE for text.
struct OssaTokEnv {
    tokenizer: Tokenizer,
    trie: TokTrie,
}

impl TokenizerEnv for OssaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        match std::str::from_utf8(s) {
            Ok(text) => self
                .tokenizer
                .encode_ordinary(text)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            // Bytes that are not text: the trie's greedy split is exact for byte-level BPE.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// The parser factory of one tokenizer. Building the trie of a 200k vocabulary takes a moment,
/// so it is built once per process and vocabulary.
fn factory(tokenizer: &Tokenizer) -> Result<Arc<ParserFactory>, SchemaError> {
    static FACTORIES: Mutex<Vec<(usize, Arc<ParserFactory>)>> = Mutex::new(Vec::new());
    let key = tokenizer.vocab_size();
    let mut factories = FACTORIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, factory)) = factories.iter().find(|(k, _)| *k == key) {
        return Ok(Arc::clone(factory));
    }
    let words: Vec<Vec<u8>> = (0..key as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default();
            if tokenizer.is_special(id) || bytes.is_empty() {
                let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                if bytes.is_empty() {
                    word.extend_from_slice(format!("<|unused_{id}|>").as_bytes());
                } else {
                    word.extend_from_slice(bytes);
                }
                word
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let eos = tokenizer
        .token_id("<|return|>")
        .ok_or_else(|| SchemaError("the tokenizer has no <|return|> token".to_string()))?;
    let trie = TokTrie::from(&TokRxInfo::new(key as u32, eos), &words);
    let env: TokEnv = Arc::new(OssaTokEnv {
        tokenizer: tokenizer.clone(),
        trie,
    });
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| SchemaError(e.to_string()))?;
    // Errors come back as values; nothing goes to stderr.
    factory.quiet();
    let factory = Arc::new(factory);
    factories.push((key, Arc::clone(&factory)));
    Ok(factory)
}

/// A compiled JSON schema, ready to constrain messages.
#[derive(Clone)]
pub struct JsonSchema {
    factory: Arc<ParserFactory>,
    grammar: TopLevelGrammar,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSchema(..)")
    }
}

impl JsonSchema {
    /// Compiles `schema` for `tokenizer`'s vocabulary; an unsupported schema is an error naming
    /// the problem.
    pub fn compile(tokenizer: &Tokenizer, schema: &Value) -> Result<Self, SchemaError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(SchemaError(format!(
                "a JSON schema must be an object, not {schema}"
            )));
        }
        let mut schema = schema.clone();
        if let Some(object) = schema.as_object_mut() {
            // Whitespace between tokens, as much as pretty-printing needs but bounded: with
            // llguidance's default (any run) a model can fill its whole budget with newlines.
            object.entry("x-guidance").or_insert_with(
                || serde_json::json!({"whitespace_pattern": r"[\x20\x0A\x0D\x09]{1,48}"}),
            );
        }
        let compiled = JsonSchema {
            factory: factory(tokenizer)?,
            grammar: TopLevelGrammar::from_json_schema(schema),
        };
        // Compiling now finds what the schema gets wrong before anything is generated.
        compiled.matcher()?;
        Ok(compiled)
    }

    /// Any JSON object (`{"type": "json_object"}`).
    pub fn any_object(tokenizer: &Tokenizer) -> Result<Self, SchemaError> {
        Self::compile(tokenizer, &serde_json::json!({"type": "object"}))
    }

    fn matcher(&self) -> Result<Matcher, SchemaError> {
        let parser = self
            .factory
            .create_parser(self.grammar.clone())
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(Matcher::new(Ok(parser)))
    }
}

/// What a conversation's generations must write as JSON.
#[derive(Debug, Clone, Default)]
pub struct StructuredOutputs {
    /// The answer (`final` channel) follows this schema.
    pub answer: Option<JsonSchema>,
    /// The arguments of calls to these functions (`functions.NAME`, by NAME) follow these.
    pub functions: HashMap<String, JsonSchema>,
}

impl StructuredOutputs {
    pub fn is_empty(&self) -> bool {
        self.answer.is_none() && self.functions.is_empty()
    }

    /// Whether `message`, just made of a header, would reach the client outside the schema
    /// that covers it. With `content_follows` (the header ended in `<|message|>`) its content
    /// is yet to come, and held to the schema if one covers it; otherwise the header's own
    /// text is the content, unconstrained.
    pub fn escapes(&self, message: &Message, content_follows: bool) -> bool {
        match message.recipient.as_deref().filter(|r| *r != "all") {
            None => {
                let channel = message.channel.as_deref();
                if self.answer.is_none() || channel == Some("analysis") {
                    return false;
                }
                if content_follows {
                    !matches!(channel, None | Some("final"))
                } else {
                    // Whitespace around JSON is still JSON.
                    !message.text().trim().is_empty()
                }
            }
            Some(recipient) => {
                !content_follows
                    && recipient
                        .strip_prefix("functions.")
                        .is_some_and(|name| self.functions.contains_key(name))
            }
        }
    }
}

/// Content the schema constrains, being written.
struct Constrained {
    matcher: Matcher,
    /// The token that ends the message (`<|return|>` for the answer, `<|call|>` for a call).
    end: u32,
}

/// The [`LogitsMask`] of one generation (see the module documentation). It reads the tokens
/// with the same lenient harmony parser the agent uses, so it sees the same messages: a header
/// the model left incomplete, or a `<|channel|>` written inside a message's content (which
/// starts the next message), is read as the agent reads it.
pub struct HarmonyMask {
    outputs: Arc<StructuredOutputs>,
    parser: StreamableParser,
    is_special: Vec<bool>,
    return_: u32,
    call: u32,
    /// `<|message|>`: it ends a header, and the message's content follows.
    message: u32,
    /// The stop tokens and `<|start|>`: each ends a header by making a message of its text,
    /// the same message whichever it is.
    recovering_ends: [u32; 4],
    constrained: Option<Constrained>,
    /// The grammar's last error (the mask then stops constraining that message).
    error: Option<String>,
}

impl HarmonyMask {
    /// For a generation whose prompt ends in `<|start|>assistant` followed by `forced`, the
    /// start of the message written for the model.
    pub fn new(
        encoding: &HarmonyEncoding,
        outputs: Arc<StructuredOutputs>,
        forced: &[u32],
    ) -> Self {
        let t = encoding.formatting_tokens();
        let tokenizer = encoding.tokenizer();
        let is_special = (0..tokenizer.vocab_size() as u32)
            .map(|id| tokenizer.is_special(id))
            .collect();
        let mut mask = HarmonyMask {
            outputs,
            parser: StreamableParser::new(
                encoding.clone(),
                Some(Role::Assistant),
                ParseMode::Lenient,
            ),
            is_special,
            return_: t.return_,
            call: t.call,
            message: t.message,
            recovering_ends: [t.end, t.return_, t.call, t.start],
            constrained: None,
            error: None,
        };
        for &token in forced {
            mask.commit(token);
        }
        mask
    }

    /// As a mask the engine applies.
    pub fn shared(self) -> SharedMask {
        SharedMask::new(self)
    }

    /// The grammar's error, when one stopped the constraint.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The schema for the message whose content the parser just entered, and the token that
    /// ends it.
    fn schema_for_current(&self) -> Option<(&JsonSchema, u32)> {
        match self.parser.current_recipient().filter(|r| *r != "all") {
            None => {
                if matches!(self.parser.current_channel(), None | Some("final")) {
                    return self.outputs.answer.as_ref().map(|s| (s, self.return_));
                }
                None
            }
            Some(recipient) => {
                let name = recipient.strip_prefix("functions.")?;
                self.outputs.functions.get(name).map(|s| (s, self.call))
            }
        }
    }

    fn special(&self, id: usize) -> bool {
        // Ids past the tokenizer's table (a model's padded vocabulary) are never text.
        self.is_special.get(id).copied().unwrap_or(true)
    }
}

impl LogitsMask for HarmonyMask {
    fn mask(&mut self, logits: &mut [f32]) {
        if self.parser.state() == StreamState::Header {
            // See the module documentation: e.g. a preamble (`commentary` to nobody) may not
            // begin; the model names a recipient or writes its answer on `final`.
            let escapes = |token: u32, content_follows: bool| {
                self.parser
                    .message_if_header_ended_by(Some(token))
                    .is_some_and(|m| self.outputs.escapes(&m, content_follows))
            };
            let mut banned = Vec::new();
            if escapes(self.message, true) {
                banned.push(self.message);
            }
            if escapes(self.recovering_ends[0], false) {
                banned.extend(self.recovering_ends);
            }
            for token in banned {
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit = f32::NEG_INFINITY;
                }
            }
            return;
        }
        let Some(Constrained { matcher, end }) = &mut self.constrained else {
            return;
        };
        let end = *end;
        // A grammar that can take nothing more is stopped: then only the end is left.
        let allowed = match matcher.compute_mask_or_eos() {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::warn!(error = %e, "structured output: the grammar failed; the rest of the message is unconstrained");
                self.error = Some(e.to_string());
                self.constrained = None;
                return;
            }
        };
        let end_allowed = matcher.is_stopped() || matcher.is_accepting().unwrap_or(false);
        if allowed.num_set() == 0 && !end_allowed {
            return;
        }
        let trie_len = allowed.len();
        for (id, logit) in logits.iter_mut().enumerate() {
            let keep = if id < trie_len && !self.special(id) {
                allowed.is_allowed(id as u32)
            } else {
                end_allowed && id as u32 == end
            };
            if !keep {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    fn commit(&mut self, token: u32) {
        let was_content = self.parser.state() == StreamState::Content;
        // Lenient parsing never fails.
        let _ = self.parser.process(token);
        let now = self.parser.state();
        if now != StreamState::Content {
            self.constrained = None;
            return;
        }
        if !was_content {
            // The header just ended: does the schema cover this message?
            self.constrained = match self.schema_for_current() {
                Some((schema, end)) => match schema.matcher() {
                    Ok(matcher) => Some(Constrained { matcher, end }),
                    Err(e) => {
                        self.error = Some(e.0);
                        None
                    }
                },
                None => None,
            };
            return;
        }
        let special = self.special(token as usize);
        if let Some(Constrained { matcher, .. }) = &mut self.constrained
            && !special
            && let Err(e) = matcher.consume_token(token)
        {
            self.error = Some(e.to_string());
            self.constrained = None;
        }
    }
}

/// What the mask costs per token, for `ossa bench`: the median microseconds of one
/// [`LogitsMask::mask`] + [`LogitsMask::commit`] step over `logits_len` logits, writing a
/// typical answer (nested objects, an array, strings, numbers) under its schema.
pub fn mask_cost_us(encoding: &HarmonyEncoding, logits_len: usize) -> Result<f64, SchemaError> {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "array", "items": {"type": "object", "properties": {
                "date": {"type": "string", "format": "date"},
                "high_c": {"type": "number"},
                "summary": {"type": "string", "maxLength": 200},
                "rain": {"type": "boolean"}},
                "required": ["date", "high_c", "summary", "rain"],
                "additionalProperties": false}},
            "source": {"enum": ["model", "station"]}},
        "required": ["city", "days", "source"],
        "additionalProperties": false,
    });
    let answer = r#"{"city": "Lisbon", "days": [{"date": "2026-01-01", "high_c": 15.5, "summary": "Sunny with a light breeze from the west; cool in the evening.", "rain": false}, {"date": "2026-01-02", "high_c": 13, "summary": "Showers in the morning, clearing later.", "rain": true}], "source": "model"}"#;
    let tokenizer = encoding.tokenizer();
    let outputs = StructuredOutputs {
        answer: Some(JsonSchema::compile(tokenizer, &schema)?),
        ..StructuredOutputs::default()
    };
    let header = tokenizer
        .encode(
            "<|channel|>final<|message|>",
            ossa_engine::AllowedSpecial::All,
        )
        .map_err(|e| SchemaError(e.to_string()))?;
    let tokens = tokenizer
        .encode_ordinary(answer)
        .map_err(|e| SchemaError(e.to_string()))?;
    let mut mask = HarmonyMask::new(encoding, Arc::new(outputs), &header);
    let mut logits = vec![0.0f32; logits_len];
    let mut times = Vec::with_capacity(tokens.len());
    for &token in &tokens {
        logits.fill(0.0);
        let started = std::time::Instant::now();
        mask.mask(&mut logits);
        mask.commit(token);
        times.push(started.elapsed().as_secs_f64() * 1e6);
        if !logits.get(token as usize).is_some_and(|v| v.is_finite()) {
            return Err(SchemaError(format!(
                "the mask banned token {token} of a valid answer"
            )));
        }
    }
    if let Some(error) = mask.error() {
        return Err(SchemaError(error.to_string()));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "object", "properties": {"n": {"type": "integer"}},
        "required": ["n"], "additionalProperties": false}"#;

    fn encoding() -> HarmonyEncoding {
        HarmonyEncoding::gpt_oss().expect("the offline o200k_harmony tokenizer")
    }

    fn mask_after(
        encoding: &HarmonyEncoding,
        outputs: StructuredOutputs,
        text: &str,
    ) -> HarmonyMask {
        let tokens = encoding
            .tokenizer()
            .encode(text, ossa_engine::AllowedSpecial::All)
            .expect("encodes");
        HarmonyMask::new(encoding, Arc::new(outputs), &tokens)
    }

    fn allowed(mask: &mut HarmonyMask, encoding: &HarmonyEncoding, text: &str) -> bool {
        let tokenizer = encoding.tokenizer();
        let ids = tokenizer
            .encode(text, ossa_engine::AllowedSpecial::All)
            .expect("encodes");
        assert_eq!(ids.len(), 1, "{text:?} is one token");
        let mut logits = vec![0.0f32; tokenizer.vocab_size()];
        mask.mask(&mut logits);
        logits[ids[0] as usize].is_finite()
    }

    /// A mask under [`answer_schema`] after the harmony `text`.
    fn answer_mask(encoding: &HarmonyEncoding, text: &str) -> HarmonyMask {
        mask_after(encoding, answer_schema(encoding), text)
    }

    /// Asserts that a mask under `outputs`, after the harmony text `after`, allows each of
    /// `allows` and none of `forbids` as the next token.
    fn assert_after(
        encoding: &HarmonyEncoding,
        outputs: &StructuredOutputs,
        after: &str,
        allows: &[&str],
        forbids: &[&str],
    ) {
        let mut mask = mask_after(encoding, outputs.clone(), after);
        for token in allows {
            assert!(
                allowed(&mut mask, encoding, token),
                "{token:?} after {after:?}"
            );
        }
        for token in forbids {
            assert!(
                !allowed(&mut mask, encoding, token),
                "no {token:?} after {after:?}"
            );
        }
    }

    /// Outputs where only the function `count`'s arguments follow [`SCHEMA`].
    fn count_function(encoding: &HarmonyEncoding) -> StructuredOutputs {
        let schema: Value = serde_json::from_str(SCHEMA).expect("json");
        let mut outputs = StructuredOutputs::default();
        outputs.functions.insert(
            "count".to_string(),
            JsonSchema::compile(encoding.tokenizer(), &schema).expect("compiles"),
        );
        outputs
    }

    /// Commits the ordinary (non-special) tokens of `text`, as if the model sampled them.
    fn commit_text(mask: &mut HarmonyMask, encoding: &HarmonyEncoding, text: &str) {
        for token in encoding.tokenizer().encode_ordinary(text).expect("encodes") {
            mask.commit(token);
        }
    }

    fn answer_schema(encoding: &HarmonyEncoding) -> StructuredOutputs {
        let schema: Value = serde_json::from_str(SCHEMA).expect("json");
        StructuredOutputs {
            answer: Some(JsonSchema::compile(encoding.tokenizer(), &schema).expect("compiles")),
            ..StructuredOutputs::default()
        }
    }

    #[test]
    fn the_answer_is_held_to_the_schema_and_may_end_only_when_complete() {
        let encoding = encoding();
        let mut mask = answer_mask(&encoding, "<|channel|>final<|message|>");
        assert!(allowed(&mut mask, &encoding, "{\""));
        // Text that would break the JSON, and the end of the message before any JSON.
        assert!(!allowed(&mut mask, &encoding, "Hello"));
        assert!(!allowed(&mut mask, &encoding, "<|return|>"));
        assert!(!allowed(&mut mask, &encoding, "<|end|>"));
        commit_text(&mut mask, &encoding, "{\"n\":");
        assert!(allowed(&mut mask, &encoding, "42"));
        assert!(!allowed(&mut mask, &encoding, "\"x"));
        assert!(!allowed(&mut mask, &encoding, "<|return|>"));
        commit_text(&mut mask, &encoding, "42}");
        assert!(allowed(&mut mask, &encoding, "<|return|>"));
        assert!(!allowed(&mut mask, &encoding, "<|call|>"));
        assert!(!allowed(&mut mask, &encoding, ","));
        assert_eq!(mask.error(), None);
    }

    #[test]
    fn reasoning_and_headers_stay_free() {
        let encoding = encoding();
        let mut mask = answer_mask(&encoding, "<|channel|>analysis<|message|>");
        assert!(allowed(&mut mask, &encoding, "Hello"));
        assert!(allowed(&mut mask, &encoding, "<|end|>"));
        // The header of the next message is free too; its content is not.
        let mut mask = answer_mask(
            &encoding,
            "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final",
        );
        assert!(allowed(&mut mask, &encoding, "Hello"));
        mask.commit(encoding.formatting_tokens().message);
        assert!(!allowed(&mut mask, &encoding, "Hello"));
        // A `<|channel|>` written inside the reasoning starts the next message (as the agent's
        // lenient parser reads it): that answer is held to the schema too.
        let mut mask = answer_mask(
            &encoding,
            "<|channel|>analysis<|message|>Doub18<|channel|>final<|message|>",
        );
        assert!(!allowed(&mut mask, &encoding, "Hello"));
        assert!(allowed(&mut mask, &encoding, "{\""));
    }

    #[test]
    fn with_an_answer_format_a_preamble_cannot_begin() {
        let encoding = encoding();
        let answer = answer_schema(&encoding);
        let preamble = "<|channel|>commentary";
        assert_after(&encoding, &answer, preamble, &[" to"], &["<|message|>"]);
        let call = "<|channel|>commentary to=functions.f ";
        assert_after(&encoding, &answer, call, &["<|message|>"], &[]);
        assert_after(
            &encoding,
            &answer,
            "<|channel|>final",
            &["<|message|>"],
            &[],
        );
        // Without an answer format, preambles are free.
        let free = StructuredOutputs::default();
        assert_after(&encoding, &free, preamble, &["<|message|>"], &[]);
    }

    #[test]
    fn a_header_cannot_end_in_text_shown_outside_the_schema() {
        let encoding = encoding();
        // After a message's end, text the model writes is a header without `<|start|>`; ended
        // by a stop token or `<|start|>`, the lenient parser would make it an answer of that
        // text (sampled at temperature 1.5 by the tiny model: "to 355673 voertu…").
        let after_reasoning = "<|channel|>analysis<|message|>Think.<|end|>Hello there";
        let answer = answer_schema(&encoding);
        let ends = ["<|end|>", "<|return|>", "<|call|>", "<|start|>"];
        assert_after(&encoding, &answer, after_reasoning, &[" world"], &ends);
        // Without a format the same text may end.
        let free = StructuredOutputs::default();
        assert_after(&encoding, &free, after_reasoning, &["<|end|>"], &[]);
        // A header that would make reasoning, or nothing, may end however it likes.
        let analysis = "<|channel|>analysis";
        assert_after(
            &encoding,
            &answer,
            analysis,
            &["<|end|>", "<|message|>"],
            &[],
        );
        // A channel the model made up would be shown as answer text, unconstrained.
        assert_after(
            &encoding,
            &answer,
            "<|channel|>finale",
            &[],
            &["<|message|>"],
        );
        // A strict function's call may only come through its constrained content.
        let count = count_function(&encoding);
        let call = "<|channel|>commentary to=functions.count {\"n\": 1}";
        assert_after(&encoding, &count, call, &["<|message|>"], &["<|call|>"]);
    }

    #[test]
    fn strict_function_arguments_end_with_a_call() {
        let encoding = encoding();
        let outputs = Arc::new(count_function(&encoding));
        let header = "<|channel|>commentary to=functions.count <|constrain|>json<|message|>";
        let mut mask = mask_after(&encoding, (*outputs).clone(), header);
        assert!(!allowed(&mut mask, &encoding, "Hello"));
        commit_text(&mut mask, &encoding, "{\"n\":7}");
        assert!(allowed(&mut mask, &encoding, "<|call|>"));
        assert!(!allowed(&mut mask, &encoding, "<|return|>"));
        // Another function, and the answer (no answer schema here), are free.
        let other = "<|channel|>commentary to=functions.other <|constrain|>json<|message|>";
        let mut mask = mask_after(&encoding, (*outputs).clone(), other);
        assert!(allowed(&mut mask, &encoding, "Hello"));
        let mut mask = mask_after(&encoding, (*outputs).clone(), "<|channel|>final<|message|>");
        assert!(allowed(&mut mask, &encoding, "Hello"));
    }

    #[test]
    fn the_bench_answer_passes_its_own_mask() {
        let encoding = encoding();
        let us = mask_cost_us(&encoding, encoding.tokenizer().vocab_size()).expect("measures");
        assert!(us > 0.0);
    }

    #[test]
    fn unsupported_schemas_are_errors_naming_the_problem() {
        let tokenizer = encoding().tokenizer().clone();
        let missing = serde_json::json!({"type": "object",
            "properties": {"a": {"$ref": "#/$defs/nowhere"}}});
        let error = JsonSchema::compile(&tokenizer, &missing).expect_err("a dangling $ref");
        assert!(error.0.contains("nowhere"), "{error}");
        let error = JsonSchema::compile(&tokenizer, &serde_json::json!("object"))
            .expect_err("not a schema");
        assert!(error.0.contains("must be an object"), "{error}");
    }
}
