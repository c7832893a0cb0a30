//! The wire format of the OpenAI-compatible APIs as typed serde values, one module per API:
//! what `ossa serve` reads (request bodies: `ChatCompletionRequest`, `CreateResponseRequest`,
//! `CompletionRequest`, and in [`request`] what they share) and what it answers (response
//! bodies and stream events). Handlers build these types; nothing answers with hand-built
//! JSON, so a misspelt field or a missing one is a compile error rather than a client's parse
//! error.
//!
//! Every answer type also deserializes, strictly (`deny_unknown_fields`): the tests parse each
//! body and event the server sends back into these types, so a field the server adds outside
//! them fails a test. Request types are lenient instead (fields ossa does not read are
//! ignored, as OpenAI-compatible servers do). What the server echoes from the request as the
//! client sent it (`tools`, `tool_choice`, `metadata`, `text`) stays a JSON value.

pub mod chat;
pub mod completions;
pub mod models;
pub mod request;
pub mod responses;

/// Seconds since the Unix epoch, as the APIs' `created` fields count time.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A field that always holds one string (`"object": "response"`): serializes as that string,
/// and deserializes only from it.
macro_rules! constant {
    ($(#[$meta:meta])* $name:ident = $value:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub const VALUE: &'static str = $value;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                if text == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(&text),
                        &$value,
                    ))
                }
            }
        }
    };
}
pub(crate) use constant;

pub use super::params::{TokenLogprob, TopLogprob};
