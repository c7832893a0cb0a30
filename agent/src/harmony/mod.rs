//! The harmony chat format of gpt-oss, token-exact with OpenAI's openai-harmony 0.0.8.
//!
//! - [`chat`]: conversations ([`Conversation`], [`Message`], [`SystemContent`],
//!   [`DeveloperContent`], ...) with openai-harmony's JSON shape.
//! - [`HarmonyEncoding`]: renders conversations to tokens (for completion, whole, for
//!   training, with the reference's chain-of-thought dropping) over an
//!   [`ossa_engine::tokenizer::Tokenizer`].
//! - [`StreamableParser`]: parses sampled tokens one at a time into messages, with the
//!   reference's behaviour ([`ParseMode::Strict`], [`ParseMode::NonStrict`]) or ossa's recovery
//!   mode for malformed output ([`ParseMode::Lenient`]).
//!
//! ```no_run
//! use ossa_agent::harmony::*;
//!
//! let encoding = HarmonyEncoding::gpt_oss()?;
//! let conversation = Conversation::from_messages([
//!     Message::from_role_and_content(Role::System, SystemContent::new().with_reasoning_effort(ReasoningEffort::Low)),
//!     Message::from_role_and_content(Role::User, "What is 2 + 2?"),
//! ]);
//! let prompt = encoding.render_conversation_for_completion(&conversation, Role::Assistant, None)?;
//! let mut parser = StreamableParser::new(encoding.clone(), Some(Role::Assistant), ParseMode::Strict);
//! # let sampled: Vec<u32> = vec![];
//! for token in sampled {
//!     parser.process(token)?;
//!     if let Some(delta) = parser.last_content_delta() {
//!         print!("{delta}");
//!     }
//! }
//! parser.process_eos()?;
//! # let _ = prompt;
//! # Ok::<(), HarmonyError>(())
//! ```

pub mod chat;
mod encoding;
mod error;
mod header;
mod parser;
mod typescript;

pub use chat::{
    Author, ChannelConfig, Content, Conversation, DeveloperContent, Message, ReasoningEffort, Role,
    SystemContent, TextContent, ToolDescription, ToolNamespaceConfig, ToolNamespaces, UnknownRole,
};
pub use encoding::{FormattingTokens, HarmonyEncoding, RenderConversationConfig, RenderOptions};
pub use error::{DecodeError, HarmonyError};
pub use header::ParsedHeader;
pub use parser::{ParseMode, StreamState, StreamableParser};
