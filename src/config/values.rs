//! The values the file and the flags check, each checked in one place. A value with a range is
//! a newtype whose constructors all go through its `new`: `FromStr` for flags and text (clap's
//! value parser), `TryFrom` for the number serde reads from the file (`#[serde(try_from)]`) and
//! for values built in code; so a [`Config`](super::Config) or
//! [`ConfigArgs`](super::ConfigArgs) cannot hold one unchecked, and the user sees one message
//! whichever way the value came. Names with a fixed set of values (reasoning effort, dtype,
//! search backend, server kind) have one `parse_*` each.

use std::ops::Deref;
use std::str::FromStr;
use std::time::Duration;

use ossa_agent::harmony::ReasoningEffort;
use ossa_agent::remote::RemoteKind;
use ossa_engine::DType;
use ossa_tools::browser::SearchBackendKind;
use serde::{Deserialize, Deserializer};

/// The most `[python] max_interpreters` may be.
pub const MAX_INTERPRETERS: u32 = 1024;

/// The shared impls of a checked newtype over a number, all through its `new`: `get`, `FromStr`
/// (the number's own parse, then the check) and `TryFrom` of the number.
macro_rules! checked_number {
    ($name:ident($inner:ty), $not_a:literal) => {
        impl $name {
            /// The value.
            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(value: &str) -> Result<Self, String> {
                let n: $inner = value
                    .trim()
                    .parse()
                    .map_err(|_| format!(concat!("`{}` is not ", $not_a), value))?;
                Self::new(n)
            }
        }

        impl TryFrom<$inner> for $name {
            type Error = String;
            fn try_from(value: $inner) -> Result<Self, String> {
                Self::new(value)
            }
        }
    };
}

/// A sampling parameter: an f32 newtype whose `new` takes the finite values `$valid` accepts
/// (else the error `$must, got VALUE`), with [`checked_number!`]'s impls and `TryFrom<f64>`:
/// the file's floats are f64, as TOML writes them, and the parameter is the f32 nearest.
macro_rules! sampling_parameter {
    ($(#[$meta:meta])* $name:ident, $valid:expr, $must:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize)]
        #[serde(try_from = "f64")]
        pub struct $name(f32);

        impl $name {
            pub fn new(value: f32) -> Result<Self, String> {
                let valid: fn(f32) -> bool = $valid;
                if value.is_finite() && valid(value) {
                    Ok(Self(value))
                } else {
                    Err(format!(concat!($must, ", got {}"), value))
                }
            }
        }
        checked_number!($name(f32), "a number");

        impl TryFrom<f64> for $name {
            type Error = String;
            fn try_from(value: f64) -> Result<Self, String> {
                Self::new(value as f32)
            }
        }
    };
}

sampling_parameter!(
    /// A sampling temperature: 0 (greedy) or more, finite.
    Temperature,
    |t| t >= 0.0,
    "temperature must be 0 (greedy) or more"
);

sampling_parameter!(
    /// Nucleus sampling's probability mass: more than 0, at most 1.
    TopP,
    |p| p > 0.0 && p <= 1.0,
    "top_p must be more than 0 and at most 1"
);

/// A count or size that must be at least 1 (threads, tokens, bytes, MiB, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "usize")]
pub struct Count(usize);

impl Count {
    pub fn new(value: usize) -> Result<Self, String> {
        if value == 0 {
            Err("must be at least 1".into())
        } else {
            Ok(Self(value))
        }
    }
}
checked_number!(Count(usize), "a whole number");

/// Python interpreters alive at once: 1 to [`MAX_INTERPRETERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "u32")]
pub struct Interpreters(u32);

impl Interpreters {
    pub fn new(value: u32) -> Result<Self, String> {
        // Each interpreter's slot in the pool reserves address space (about 4 GiB) up front.
        if (1..=MAX_INTERPRETERS).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("must be 1 to {MAX_INTERPRETERS}, got {value}"))
        }
    }
}
checked_number!(Interpreters(u32), "a whole number");

/// A time limit in seconds: above 0, at most a year.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize)]
#[serde(try_from = "f64")]
pub struct Seconds(f64);

impl Seconds {
    pub fn new(value: f64) -> Result<Self, String> {
        // Duration::from_secs_f64 panics past u64::MAX seconds; a year is more than any limit
        // needs.
        if value.is_finite() && value > 0.0 && value <= 365.0 * 24.0 * 3600.0 {
            Ok(Self(value))
        } else {
            Err(format!(
                "must be a number of seconds above 0 (and at most a year), got {value}"
            ))
        }
    }

    /// The limit as a `Duration` (cannot panic: the range was checked).
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}
checked_number!(Seconds(f64), "a number");

/// An interpreter's memory, or all interpreters' together, in MiB: at least 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "u64")]
pub struct MemoryMib(u64);

impl MemoryMib {
    pub fn new(value: u64) -> Result<Self, String> {
        if value < 48 {
            Err(format!(
                "must be at least 48 (MiB): the interpreter alone starts at 40 MiB; got {value}"
            ))
        } else {
            Ok(Self(value))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0.saturating_mul(1 << 20)
    }
}
checked_number!(MemoryMib(u64), "a whole number");

/// An `http://` or `https://` URL (a search API's base, a proxy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn new(url: String) -> Result<Self, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(Self(url))
        } else {
            Err(format!("must start with http:// or https://, got `{url}`"))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(url: String) -> Result<Self, String> {
        Self::new(url)
    }
}

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        Self::new(url.to_string())
    }
}

impl Deref for HttpUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A date written `YYYY-MM-DD` that exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Date(String);

impl Date {
    /// Today in the local time zone.
    pub fn today() -> Self {
        Self(
            chrono::Local::now()
                .date_naive()
                .format("%Y-%m-%d")
                .to_string(),
        )
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for Date {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let well_formed = value.len() == 10
            && value.char_indices().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            });
        if well_formed && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() {
            Ok(Self(value.to_string()))
        } else {
            Err(format!(
                "`{value}` is not a date written YYYY-MM-DD (e.g. 2025-08-05)"
            ))
        }
    }
}

impl Deref for Date {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A date as `YYYY-MM-DD`, checked to exist.
pub fn parse_date(value: &str) -> Result<String, String> {
    value.parse().map(Date::into_string)
}

/// Today in the local time zone, `YYYY-MM-DD`.
pub fn today() -> String {
    Date::today().into_string()
}

/// A flag's whole number of at least 1 (the `/set max_tokens` of `ossa chat` too).
pub fn parse_count(value: &str) -> Result<usize, String> {
    value.parse().map(Count::get)
}

pub fn parse_temperature(value: &str) -> Result<f32, String> {
    value.parse().map(Temperature::get)
}

pub fn parse_top_p(value: &str) -> Result<f32, String> {
    value.parse().map(TopP::get)
}

/// `low`, `medium` or `high`.
pub fn parse_effort(value: &str) -> Result<ReasoningEffort, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "low" => Ok(ReasoningEffort::Low),
        "medium" => Ok(ReasoningEffort::Medium),
        "high" => Ok(ReasoningEffort::High),
        _ => Err(format!(
            "unknown reasoning effort `{value}` (expected low, medium or high)"
        )),
    }
}

/// `f32`, `bf16` or `q8`.
pub fn parse_dtype(value: &str) -> Result<DType, String> {
    value.parse()
}

/// A search backend name (`duckduckgo`, `exa`, `you`, `brave`, `tavily`, `searxng`).
pub fn parse_backend(value: &str) -> Result<SearchBackendKind, String> {
    SearchBackendKind::parse(value).ok_or_else(|| {
        format!(
            "unknown search backend `{value}` (expected duckduckgo, exa, you, brave, tavily or \
             searxng)"
        )
    })
}

/// A remote server's dialect (`vllm`, `llama-server`, `generic`).
pub(super) fn parse_remote_kind(value: &str) -> Result<RemoteKind, String> {
    RemoteKind::parse(value).ok_or_else(|| {
        format!(
            "unknown server kind `{value}` (expected {})",
            RemoteKind::NAMES.join(", ")
        )
    })
}

/// A name from a fixed set, read from the file by its `parse_*`.
pub(super) trait Named: Sized {
    fn parse_name(value: &str) -> Result<Self, String>;
}

impl Named for ReasoningEffort {
    fn parse_name(value: &str) -> Result<Self, String> {
        parse_effort(value)
    }
}

impl Named for DType {
    fn parse_name(value: &str) -> Result<Self, String> {
        parse_dtype(value)
    }
}

impl Named for SearchBackendKind {
    fn parse_name(value: &str) -> Result<Self, String> {
        parse_backend(value)
    }
}

/// `deserialize_with` for an optional [`Named`] value (a foreign enum, which cannot take
/// `#[serde(try_from)]`).
pub(super) fn de_name<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<Option<T>, D::Error> {
    T::parse_name(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}
