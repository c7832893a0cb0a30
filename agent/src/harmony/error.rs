//! Errors of rendering and parsing. The messages are openai-harmony's, word for word, so a
//! caller (and the conformance tests) can compare them with the reference's.

use ossa_engine::tokenizer::TokenizerError;

use super::chat::Role;

#[derive(Debug, thiserror::Error)]
pub enum HarmonyError {
    /// A tool message is rendered with its author's name in place of the role.
    #[error("Tools should have a name!")]
    ToolWithoutName,
    #[error("SystemContent may only appear in system messages, found in {0:?}")]
    SystemContentOutsideSystem(Role),
    #[error("DeveloperContent may only appear in developer messages, found in {0:?}")]
    DeveloperContentOutsideDeveloper(Role),
    /// Between messages, only `<|start|>` may come.
    #[error("Unexpected token {token} while expecting start token {start}")]
    ExpectedStart { token: u32, start: u32 },
    /// The stream ended inside a message header.
    #[error("Unexpected EOS while waiting for message header to complete")]
    EosInHeader,
    #[error("channel marker present but no channel value found in header")]
    EmptyChannel,
    #[error("message header did not contain a role")]
    HeaderWithoutRole,
    #[error("Unknown role: {0}")]
    UnknownRole(String),
    /// Header words that are neither role, recipient nor content type.
    #[error("unexpected tokens remaining in message header: Some({0:?})")]
    UnexpectedHeaderText(String),
    /// The header's tokens are not valid UTF-8 or hold an unknown id.
    #[error("could not decode header")]
    HeaderNotDecodable(#[source] DecodeError),
    /// Tokens that are not valid UTF-8 or hold an unknown id (non-strict header recovery).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The tokenizer lacks a token the harmony format needs.
    #[error("the tokenizer has no {0} token, which the harmony format needs")]
    MissingFormattingToken(&'static str),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Why a token sequence did not decode to text (openai-harmony's `DecodeError` wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("Could not decode tokens: Invalid token error: Invalid token for decoding: {0}")]
    UnknownToken(u32),
    #[error("Could not decode tokens: Invalid utf-8 sequence: {0}")]
    InvalidUtf8(std::str::Utf8Error),
}
