//! The streaming parser: sampled tokens in, messages out, one token at a time.
//!
//! In [`ParseMode::Strict`] and [`ParseMode::NonStrict`] it behaves exactly like
//! openai-harmony 0.0.8's `StreamableParser` (`strict` true or false): the same messages, the
//! same errors, the same per-token state and content deltas. [`ParseMode::Lenient`] is ossa's
//! recovery mode for malformed model output; it never returns an error and keeps every token's
//! text somewhere. Its rules, each tested:
//!
//! 1. **Text outside a message** (a token other than `<|start|>` where a message should begin,
//!    e.g. `<|channel|>final<|message|>…` right after `<|end|>`): read as a message header whose
//!    `<|start|>{role}` was left out; the role is the one the parser started with (assistant
//!    when none). A stray stop token there is ignored.
//! 2. **A header that never reaches `<|message|>`** (ended by a stop token, by the end of the
//!    stream, or by a new `<|start|>`): a message whose header fields are read from the leading
//!    header words (`<|channel|>X`, role, `to=X`, `<|constrain|>X`) and whose content is the
//!    rest of the text, spacing intact. So `<|channel|>final Hello world<|return|>` is a final
//!    message "Hello world", and a header cut off at the end of the stream is still a message.
//! 3. **Text before `<|start|>`** (the prompt ended in `<|start|>assistant`, the model wrote
//!    `Sure!<|start|>assistant<|channel|>final<|message|>hi`): the stray text becomes its own
//!    message by rule 2 (nothing is lost), and the header restarts at `<|start|>`.
//! 4. **A malformed header** (no role, an unknown role, an empty channel, words in an order the
//!    reference rejects, invalid UTF-8): whatever the reference accepts is taken as it takes it;
//!    otherwise the header is read word by word (see `header::parse_lenient`).
//! 5. **A message that runs into the next one** (`<|start|>` or `<|channel|>` inside content,
//!    the model having left out `<|end|>`): the message ends there and the next one begins, with
//!    the current role when only `<|channel|>` was written.
//! 6. **An id outside the vocabulary** in content: U+FFFD for that token, and decoding goes on
//!    (the reference turns the rest of the message into a single U+FFFD).
//!
//! Every completed message records the span of tokens it came from ([`message_spans`]), so a
//! caller can append exactly the sampled tokens to its prompt and keep its cache valid.
//!
//! [`message_spans`]: StreamableParser::message_spans

use std::convert::Infallible;
use std::ops::Range;

use super::chat::{Content, Message, Role, TextContent};
use super::encoding::HarmonyEncoding;
use super::error::{DecodeError, HarmonyError};
use super::header::{self, ParsedHeader};

/// How the parser treats malformed output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseMode {
    /// openai-harmony's default (`strict: true`).
    #[default]
    Strict,
    /// openai-harmony with `strict: false`: a stop token inside a header ends the message, the
    /// header words after the role becoming its content (first message only).
    NonStrict,
    /// ossa's recovery mode: never an error (see the module documentation).
    Lenient,
}

/// Where the parser is within the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Between messages: waiting for `<|start|>`.
    ExpectStart,
    /// Reading a header, up to `<|message|>`.
    Header,
    /// Reading content, up to a stop token.
    Content,
}

impl StreamState {
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamState::ExpectStart => "ExpectStart",
            StreamState::Header => "Header",
            StreamState::Content => "Content",
        }
    }
}

#[derive(Debug)]
enum State {
    ExpectStart,
    Header { tokens: Vec<u32> },
    Content { header: ParsedHeader, text: String },
}

/// Incremental parser of sampled tokens.
#[derive(Debug)]
pub struct StreamableParser {
    encoding: HarmonyEncoding,
    mode: ParseMode,
    /// Role of the message being started without `<|start|>` (the prompt's `<|start|>{role}`).
    next_role: Option<Role>,
    /// Role assumed for a header whose `<|start|>{role}` is missing (lenient).
    default_role: Role,
    tokens: Vec<u32>,
    messages: Vec<Message>,
    spans: Vec<Range<usize>>,
    /// Index in `tokens` where the message being read began.
    message_start: usize,
    state: State,
    last_content_delta: Option<String>,
    /// An id outside the vocabulary came in this message's content (strict, non-strict).
    undecodable: bool,
    /// Decoded bytes that do not yet form a complete character.
    undecoded_bytes: Vec<u8>,
}

const REPLACEMENT: &str = "\u{FFFD}";

// Parsing lives with the parser, so the encoding (rendering) never imports it.
impl HarmonyEncoding {
    /// Parses a whole completion (the tokens sampled after a prompt that ended in
    /// `<|start|>{role}`, or, with `role` `None`, a stream that begins with `<|start|>`).
    pub fn parse_messages_from_completion_tokens(
        &self,
        tokens: impl IntoIterator<Item = u32>,
        role: Option<Role>,
        mode: ParseMode,
    ) -> Result<Vec<Message>, HarmonyError> {
        let mut parser = StreamableParser::new(self.clone(), role, mode);
        for token in tokens {
            parser.process(token)?;
        }
        parser.process_eos()?;
        Ok(parser.into_messages())
    }
}

impl StreamableParser {
    /// A parser for the tokens sampled after a prompt ending in `<|start|>{role}`; with `role`
    /// `None`, the stream itself must begin with `<|start|>`.
    pub fn new(encoding: HarmonyEncoding, role: Option<Role>, mode: ParseMode) -> Self {
        let state = if role.is_some() {
            State::Header { tokens: Vec::new() }
        } else {
            State::ExpectStart
        };
        Self {
            encoding,
            mode,
            next_role: role,
            default_role: role.unwrap_or(Role::Assistant),
            tokens: Vec::new(),
            messages: Vec::new(),
            spans: Vec::new(),
            message_start: 0,
            state,
            last_content_delta: None,
            undecodable: false,
            undecoded_bytes: Vec::new(),
        }
    }

    pub fn mode(&self) -> ParseMode {
        self.mode
    }

    /// Consumes one token.
    pub fn process(&mut self, token: u32) -> Result<&mut Self, HarmonyError> {
        self.tokens.push(token);
        self.step(Some(token))?;
        Ok(self)
    }

    /// Signals the end of the stream: a message in progress is completed.
    pub fn process_eos(&mut self) -> Result<&mut Self, HarmonyError> {
        self.step(None)?;
        Ok(self)
    }

    fn lenient(&self) -> bool {
        self.mode == ParseMode::Lenient
    }

    fn is_stop(&self, token: u32) -> bool {
        let t = self.encoding.formatting_tokens();
        token == t.end || token == t.return_ || token == t.call
    }

    /// Index of the token being processed (the last one pushed).
    fn current_index(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }

    fn step(&mut self, token: Option<u32>) -> Result<(), HarmonyError> {
        let formatting = *self.encoding.formatting_tokens();
        let lenient = self.lenient();
        let is_stop = token.is_some_and(|t| self.is_stop(t));
        let index = self.current_index();
        let processed = self.tokens.len();
        match &mut self.state {
            State::ExpectStart => match token {
                Some(t) if t == formatting.start => {
                    self.message_start = index;
                    self.state = State::Header { tokens: Vec::new() };
                }
                None => {}
                Some(_) if lenient && is_stop => {}
                Some(t) if lenient => {
                    // Rule 1: a header whose `<|start|>{role}` was left out.
                    self.message_start = index;
                    self.next_role = Some(self.default_role);
                    self.state = State::Header { tokens: vec![t] };
                }
                Some(t) => {
                    return Err(HarmonyError::ExpectedStart {
                        token: t,
                        start: formatting.start,
                    });
                }
            },
            State::Header { tokens } => match token {
                Some(t) if t == formatting.message => {
                    let header_tokens = std::mem::take(tokens);
                    // As in the reference, a header that fails to parse leaves the parser
                    // between messages.
                    self.state = State::ExpectStart;
                    let header = self.parse_header(&header_tokens)?;
                    self.next_role = None;
                    self.state = State::Content {
                        header,
                        text: String::new(),
                    };
                }
                Some(t) if lenient && (is_stop || t == formatting.start) => {
                    // Rules 2 and 3.
                    let header_tokens = std::mem::take(tokens);
                    let restart = t == formatting.start;
                    self.recover_headerless(
                        &header_tokens,
                        if restart { index } else { processed },
                    );
                    self.next_role = None;
                    if restart {
                        self.message_start = index;
                        self.state = State::Header { tokens: Vec::new() };
                    } else {
                        self.state = State::ExpectStart;
                    }
                }
                Some(_) if self.mode == ParseMode::NonStrict && is_stop => {
                    let header_tokens = tokens.clone();
                    if let Some(role) = self.next_role
                        && !header_tokens.is_empty()
                    {
                        let text = self.decode_reference(&header_tokens)?;
                        let (header, rest) = header::parse_reference(text, Some(role), false)?;
                        self.complete(message_from(header, rest.unwrap_or_default()), processed);
                    }
                    self.state = State::ExpectStart;
                    self.next_role = None;
                }
                Some(t) => tokens.push(t),
                None if lenient => {
                    // Rule 2 at the end of the stream.
                    let header_tokens = std::mem::take(tokens);
                    self.recover_headerless(&header_tokens, processed);
                    self.next_role = None;
                    self.state = State::ExpectStart;
                }
                None => return Err(HarmonyError::EosInHeader),
            },
            State::Content { header, .. } => match token {
                None => self.finish_content(processed),
                Some(_) if is_stop => self.finish_content(processed),
                Some(t) if lenient && (t == formatting.start || t == formatting.channel) => {
                    // Rule 5: the message ran into the next one.
                    let role = header.author.role;
                    self.finish_content(index);
                    self.message_start = index;
                    if t == formatting.start {
                        self.state = State::Header { tokens: Vec::new() };
                    } else {
                        self.next_role = Some(role);
                        self.state = State::Header { tokens: vec![t] };
                    }
                }
                Some(t) => self.content_token(t),
            },
        }
        Ok(())
    }

    /// Header tokens to a header, per mode.
    fn parse_header(&self, tokens: &[u32]) -> Result<ParsedHeader, HarmonyError> {
        let role = self.next_role;
        if !self.lenient() {
            let text = self
                .decode_reference(tokens)
                .map_err(HarmonyError::HeaderNotDecodable)?;
            let (header, leftover) = header::parse_reference(text, role, true)?;
            if let Some(leftover) = leftover {
                return Err(HarmonyError::UnexpectedHeaderText(leftover));
            }
            return Ok(header);
        }
        // Rule 4: the reference's reading when it has one, else word by word.
        let text = self.decode_lossy(tokens);
        if let Ok((header, None)) = header::parse_reference(text.clone(), role, true) {
            return Ok(header);
        }
        Ok(header::parse_lenient(&text, role, true).0)
    }

    /// Rules 2 and 3: header tokens that never reached `<|message|>` become a message (unless
    /// they are only whitespace).
    fn recover_headerless(&mut self, tokens: &[u32], end: usize) {
        if let Some(message) = self.headerless_message(tokens) {
            self.complete(message, end);
        }
    }

    fn headerless_message(&self, tokens: &[u32]) -> Option<Message> {
        let text = self.decode_lossy(tokens);
        if text.trim().is_empty() {
            return None;
        }
        let (header, content) = header::parse_lenient(&text, self.next_role, false);
        Some(message_from(header, content))
    }

    /// While a header is being read: the message `token` would make of it, were it the next
    /// token (read as [`process`](Self::process) would, without consuming it), or the end of
    /// the stream, for `None`. `<|message|>` gives the header (with empty content; `None` if it
    /// would not parse); in lenient mode a stop token, `<|start|>` or the end of the stream
    /// gives the message recovered from the header's text (`None` if that is only whitespace).
    /// Any other token, or another state, gives `None`.
    pub fn message_if_header_ended_by(&self, token: Option<u32>) -> Option<Message> {
        let State::Header { tokens } = &self.state else {
            return None;
        };
        let formatting = self.encoding.formatting_tokens();
        if token == Some(formatting.message) {
            let header = self.parse_header(tokens).ok()?;
            return Some(message_from(header, String::new()));
        }
        let recovers = token.is_none_or(|t| self.is_stop(t) || t == formatting.start);
        if self.lenient() && recovers {
            return self.headerless_message(tokens);
        }
        None
    }

    /// The reference's decoding: every id known, bytes valid UTF-8.
    fn decode_reference(&self, tokens: &[u32]) -> Result<String, DecodeError> {
        let bytes = self.token_bytes(tokens, |token| Err(DecodeError::UnknownToken(token)))?;
        String::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8(e.utf8_error()))
    }

    fn decode_lossy(&self, tokens: &[u32]) -> String {
        let bytes = self
            .token_bytes(tokens, |_| Ok::<_, Infallible>(REPLACEMENT.as_bytes()))
            .unwrap_or_else(|never| match never {});
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes of `tokens` in order; an id the tokenizer does not know gets `unknown`'s answer.
    fn token_bytes<E>(
        &self,
        tokens: &[u32],
        mut unknown: impl FnMut(u32) -> Result<&'static [u8], E>,
    ) -> Result<Vec<u8>, E> {
        let tokenizer = self.encoding.tokenizer();
        let mut bytes = Vec::new();
        for &token in tokens {
            match tokenizer.token_bytes(token) {
                Some(known) => bytes.extend_from_slice(known),
                None => bytes.extend_from_slice(unknown(token)?),
            }
        }
        Ok(bytes)
    }

    /// One content token: its text, as soon as the bytes form complete characters. Invalid
    /// bytes become U+FFFD (as in the reference, one invalid sequence per token; bytes after it
    /// wait for the next token).
    fn content_token(&mut self, token: u32) {
        let State::Content { text, .. } = &mut self.state else {
            return;
        };
        if self.undecodable {
            self.last_content_delta = None;
            return;
        }
        match self.encoding.tokenizer().token_bytes(token) {
            Some(bytes) => self.undecoded_bytes.extend_from_slice(bytes),
            // Rule 6: an unknown id reads as U+FFFD.
            None if self.mode == ParseMode::Lenient => self
                .undecoded_bytes
                .extend_from_slice(REPLACEMENT.as_bytes()),
            None => {
                // The reference keeps an unknown id, and every token after it, undecoded until
                // the message ends, where they all become one U+FFFD.
                self.undecodable = true;
                self.last_content_delta = None;
                return;
            }
        }
        match std::str::from_utf8(&self.undecoded_bytes) {
            Ok(complete) => {
                text.push_str(complete);
                self.last_content_delta = Some(complete.to_string());
                self.undecoded_bytes.clear();
            }
            Err(error) => {
                let valid = error.valid_up_to();
                let mut delta =
                    String::from_utf8_lossy(&self.undecoded_bytes[..valid]).into_owned();
                self.undecoded_bytes.drain(..valid);
                match error.error_len() {
                    Some(invalid) => {
                        delta.push_str(REPLACEMENT);
                        self.undecoded_bytes.drain(..invalid);
                    }
                    None => self.last_content_delta = None,
                }
                if !delta.is_empty() {
                    text.push_str(&delta);
                    self.last_content_delta = Some(delta);
                }
            }
        }
    }

    /// Completes the message being read; its span ends at `end` (exclusive).
    fn finish_content(&mut self, end: usize) {
        let state = std::mem::replace(&mut self.state, State::ExpectStart);
        let State::Content { header, mut text } = state else {
            return;
        };
        if self.undecodable {
            text.push_str(REPLACEMENT);
        }
        text.push_str(&String::from_utf8_lossy(&self.undecoded_bytes));
        self.undecodable = false;
        self.undecoded_bytes.clear();
        self.last_content_delta = None;
        self.complete(message_from(header, text), end);
    }

    fn complete(&mut self, message: Message, end: usize) {
        let start = self.message_start.min(end);
        self.messages.push(message);
        self.spans.push(start..end);
        self.message_start = end;
    }

    /// The state, as the reference names it.
    pub fn state(&self) -> StreamState {
        match self.state {
            State::ExpectStart => StreamState::ExpectStart,
            State::Header { .. } => StreamState::Header,
            State::Content { .. } => StreamState::Content,
        }
    }

    /// Role of the message being read, when known.
    pub fn current_role(&self) -> Option<Role> {
        match &self.state {
            State::Content { header, .. } => Some(header.author.role),
            _ => self.next_role,
        }
    }

    /// Channel of the message being read (known once its header is complete).
    pub fn current_channel(&self) -> Option<&str> {
        match &self.state {
            State::Content { header, .. } => header.channel.as_deref(),
            _ => None,
        }
    }

    /// Recipient of the message being read (a tool call's target).
    pub fn current_recipient(&self) -> Option<&str> {
        match &self.state {
            State::Content { header, .. } => header.recipient.as_deref(),
            _ => None,
        }
    }

    /// Content type of the message being read.
    pub fn current_content_type(&self) -> Option<&str> {
        match &self.state {
            State::Content { header, .. } => header.content_type.as_deref(),
            _ => None,
        }
    }

    /// Author name of the message being read (tools only).
    pub fn current_author_name(&self) -> Option<&str> {
        match &self.state {
            State::Content { header, .. } => header.author.name.as_deref(),
            _ => None,
        }
    }

    /// Text the last token added to the current message's content: complete characters only,
    /// `None` when it added none.
    pub fn last_content_delta(&self) -> Option<&str> {
        self.last_content_delta.as_deref()
    }

    /// Content of the message being read, so far.
    pub fn current_content(&self) -> &str {
        match &self.state {
            State::Content { text, .. } => text,
            _ => "",
        }
    }

    /// Messages completed so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// For each completed message, the range of [`tokens`](Self::tokens) it came from: from its
    /// `<|start|>` (or from the first token, for the message whose `<|start|>{role}` ended the
    /// prompt) through its stop token. Spans are consecutive; appending each span's tokens to
    /// the prompt reproduces exactly what was sampled.
    pub fn message_spans(&self) -> &[Range<usize>] {
        &self.spans
    }

    /// The tokens completed message `index` came from.
    pub fn message_tokens(&self, index: usize) -> Option<&[u32]> {
        self.spans
            .get(index)
            .and_then(|span| self.tokens.get(span.clone()))
    }

    /// Every token processed.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    pub fn encoding(&self) -> &HarmonyEncoding {
        &self.encoding
    }
}

fn message_from(header: ParsedHeader, text: String) -> Message {
    Message {
        author: header.author,
        recipient: header.recipient,
        content: vec![Content::Text(TextContent { text })],
        channel: header.channel,
        content_type: header.content_type,
    }
}
