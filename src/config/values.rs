//! Validators, each written once: the flags' `value_parser`s, the file's `deserialize_with`s and
//! the checks of values built in code all call the same `check_*` with the same message.

use ossa_agent::harmony::ReasoningEffort;
use ossa_agent::remote::RemoteKind;
use ossa_engine::DType;
use ossa_tools::browser::SearchBackendKind;
use serde::{Deserialize, Deserializer};

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

/// A date as `YYYY-MM-DD`, checked to exist.
pub fn parse_date(value: &str) -> Result<String, String> {
    let well_formed = value.len() == 10
        && value.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if well_formed && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{value}` is not a date written YYYY-MM-DD (e.g. 2025-08-05)"
        ))
    }
}

/// Today in the local time zone, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

pub(super) fn check_temperature(value: f32) -> Result<f32, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!(
            "temperature must be 0 (greedy) or more, got {value}"
        ))
    }
}

pub(super) fn check_top_p(value: f32) -> Result<f32, String> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "top_p must be more than 0 and at most 1, got {value}"
        ))
    }
}

pub(super) fn check_count(value: usize) -> Result<usize, String> {
    if value == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(value)
    }
}

pub(super) fn check_interpreters(value: u32) -> Result<u32, String> {
    // Each interpreter's slot in the pool reserves address space (about 4 GiB) up front.
    if (1..=MAX_INTERPRETERS).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be 1 to {MAX_INTERPRETERS}, got {value}"))
    }
}

/// The most `[python] max_interpreters` may be.
pub const MAX_INTERPRETERS: u32 = 1024;

pub(super) fn check_seconds(value: f64) -> Result<f64, String> {
    // Duration::from_secs_f64 panics past u64::MAX seconds; a year is more than any limit needs.
    if value.is_finite() && value > 0.0 && value <= 365.0 * 24.0 * 3600.0 {
        Ok(value)
    } else {
        Err(format!(
            "must be a number of seconds above 0 (and at most a year), got {value}"
        ))
    }
}

pub(super) fn check_memory_mb(value: u64) -> Result<u64, String> {
    if value < 48 {
        Err(format!(
            "must be at least 48 (MiB): the interpreter alone starts at 40 MiB; got {value}"
        ))
    } else {
        Ok(value)
    }
}

fn custom<E: serde::de::Error>(message: String) -> E {
    E::custom(message)
}

pub(super) fn de_effort<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ReasoningEffort>, D::Error> {
    parse_effort(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_dtype<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DType>, D::Error> {
    parse_dtype(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_backend<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SearchBackendKind>, D::Error> {
    parse_backend(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(Some(url))
    } else {
        Err(custom(format!(
            "must start with http:// or https://, got `{url}`"
        )))
    }
}

pub(super) fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    check_count(usize::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_count_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(custom("must be at least 1".into())),
        n => Ok(Some(n)),
    }
}

pub(super) fn de_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    check_seconds(f64::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_interpreters<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    check_interpreters(u32::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    check_memory_mb(u64::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_temperature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    check_temperature(f64::deserialize(d)? as f32)
        .map(Some)
        .map_err(custom)
}

pub(super) fn de_top_p<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    check_top_p(f64::deserialize(d)? as f32)
        .map(Some)
        .map_err(custom)
}

pub(super) fn parse_remote_kind(value: &str) -> Result<RemoteKind, String> {
    RemoteKind::parse(value).ok_or_else(|| {
        format!(
            "unknown server kind `{value}` (expected {})",
            RemoteKind::NAMES.join(", ")
        )
    })
}

pub fn parse_count(value: &str) -> Result<usize, String> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    check_count(n)
}

/// A `--max-interpreters`-style flag's value, checked as `[python] max_interpreters` is.
pub fn parse_max_interpreters(value: &str) -> Result<u32, String> {
    let n: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    check_interpreters(n)
}

pub fn parse_temperature(value: &str) -> Result<f32, String> {
    let t: f32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    check_temperature(t)
}

pub fn parse_top_p(value: &str) -> Result<f32, String> {
    let p: f32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    check_top_p(p)
}
