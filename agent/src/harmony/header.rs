//! Message headers: the text between `<|start|>` and `<|message|>`, e.g.
//! `assistant to=functions.get_weather<|channel|>commentary <|constrain|>json`.

use super::chat::{Author, Role};
use super::error::HarmonyError;

const CHANNEL: &str = "<|channel|>";
const CONSTRAIN: &str = "<|constrain|>";

/// What a header says about its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub author: Author,
    pub recipient: Option<String>,
    pub channel: Option<String>,
    pub content_type: Option<String>,
}

/// Takes the first `<|channel|>VALUE` out of `header`; the value ends at whitespace or `<`.
/// `Err(())` when the marker has no value.
fn take_channel(header: &mut String) -> Result<Option<String>, ()> {
    let Some(index) = header.find(CHANNEL) else {
        return Ok(None);
    };
    let after = &header[index + CHANNEL.len()..];
    let end = after
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(after.len());
    if end == 0 {
        return Err(());
    }
    let channel = after[..end].to_string();
    let rest = after[end..].to_string();
    header.truncate(index);
    header.push_str(&rest);
    Ok(Some(channel))
}

/// openai-harmony's header parsing (`parse_header_from_string`), step for step.
///
/// With `recipient_and_type`, the last word is the recipient (`to=X`, or a lone word) or the
/// content type (then the word before it is the recipient); any other word left is returned
/// as the second value (the caller treats it as an error). Without, every word after the role
/// is returned as text joined by single spaces (non-strict recovery of a header that never
/// reached `<|message|>`).
pub(crate) fn parse_reference(
    mut header: String,
    role: Option<Role>,
    recipient_and_type: bool,
) -> Result<(ParsedHeader, Option<String>), HarmonyError> {
    let channel = take_channel(&mut header).map_err(|()| HarmonyError::EmptyChannel)?;
    let mut header = header.trim().to_string();
    if header.contains(CONSTRAIN) {
        header = header
            .replace(CONSTRAIN, &format!(" {CONSTRAIN}"))
            .trim()
            .to_string();
    }
    let mut words: Vec<&str> = header.split_ascii_whitespace().collect();

    let mut role_word = None;
    let role = match role {
        Some(role) => role,
        None => {
            let first = *words.first().ok_or(HarmonyError::HeaderWithoutRole)?;
            role_word = Some(first.to_string());
            match Role::parse(first) {
                Some(role) => role,
                // An unknown first word followed by more (or a lone `to=`) names a tool.
                None if words.len() > 1 || first.starts_with("to=") => {
                    words.remove(0);
                    Role::Tool
                }
                None => return Err(HarmonyError::UnknownRole(first.to_string())),
            }
        }
    };
    if words.first() == Some(&role.as_str()) {
        words.remove(0);
    }

    let mut recipient = None;
    let mut content_type = None;
    if recipient_and_type && let Some(last) = words.pop() {
        if let Some(target) = last.strip_prefix("to=") {
            recipient = Some(target.to_string());
        } else if words.is_empty() {
            recipient = Some(last.to_string());
        } else {
            content_type = Some(last.to_string());
            if let Some(before) = words.pop() {
                recipient = Some(before.strip_prefix("to=").unwrap_or(before).to_string());
            }
        }
    }
    let leftover = (!words.is_empty()).then(|| words.join(" "));
    let name = if role == Role::Tool { role_word } else { None };
    Ok((
        ParsedHeader {
            author: Author { role, name },
            recipient,
            channel,
            content_type,
        },
        leftover,
    ))
}

/// What one header word is, for lenient parsing.
enum Word<'a> {
    Recipient(&'a str),
    ContentType(&'a str),
    Other(&'a str),
}

fn classify(word: &str) -> Word<'_> {
    if let Some(target) = word.strip_prefix("to=") {
        Word::Recipient(target)
    } else if word.starts_with(CONSTRAIN) {
        Word::ContentType(word)
    } else {
        Word::Other(word)
    }
}

/// Splits header text into words, also before each `<|constrain|>` (`to=x<|constrain|>json`),
/// with the byte offset where each word starts.
fn words_with_offsets(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut push = |start: usize, word: &'_ str| {
        let mut from = 0;
        for (index, _) in word.match_indices(CONSTRAIN) {
            if index > from {
                out.push((start + from, from..index));
            }
            from = index;
        }
        out.push((start + from, from..word.len()));
    };
    let mut word_start = None;
    for (index, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        if c.is_whitespace() {
            if let Some(start) = word_start.take() {
                push(start, &text[start..index]);
            }
        } else if word_start.is_none() {
            word_start = Some(index);
        }
    }
    out.into_iter()
        .map(|(start, range)| (start, &text[start..start + range.len()]))
        .collect()
}

/// Lenient header parsing: never fails.
///
/// `text` is the header (lossily decoded). The channel is the first `<|channel|>VALUE` (a marker
/// without value is ignored). The role is `role` when given (a repeated role word is skipped),
/// else the first word: a known role, or else the name of a tool. `to=X` is the recipient and
/// `<|constrain|>X` the content type wherever they stand. With `complete` (the header reached
/// `<|message|>`), other words fill, in order, a tool's missing name, the recipient, the content
/// type; extra words are dropped. Without `complete` (the header never reached `<|message|>`),
/// header words are read only up to the first word that is none of the above, and the text from
/// there on, spacing intact, is returned as the message content.
pub(crate) fn parse_lenient(
    text: &str,
    role: Option<Role>,
    complete: bool,
) -> (ParsedHeader, String) {
    let mut header = text.to_string();
    let channel = loop {
        match take_channel(&mut header) {
            Ok(channel) => break channel,
            // Drop an empty marker and look for another.
            Err(()) => {
                if let Some(index) = header.find(CHANNEL) {
                    header.replace_range(index..index + CHANNEL.len(), " ");
                }
            }
        }
    };
    let words = words_with_offsets(&header);
    let mut iter = words.iter().peekable();

    let mut name = None;
    let role = match role {
        Some(role) => {
            if iter.peek().is_some_and(|(_, w)| *w == role.as_str()) {
                iter.next();
            }
            role
        }
        None => match iter.peek().map(|(_, w)| classify(w)) {
            Some(Word::Other(word)) => {
                iter.next();
                match Role::parse(word) {
                    Some(Role::Tool) => {
                        name = Some(word.to_string());
                        Role::Tool
                    }
                    Some(role) => role,
                    None => {
                        name = Some(word.to_string());
                        Role::Tool
                    }
                }
            }
            _ => Role::Assistant,
        },
    };

    let mut recipient = None;
    let mut content_type = None;
    let mut content = String::new();
    for &(offset, word) in iter {
        match classify(word) {
            Word::Recipient(target) if recipient.is_none() => recipient = Some(target.to_string()),
            Word::ContentType(kind) if content_type.is_none() => {
                content_type = Some(kind.to_string())
            }
            Word::Recipient(_) | Word::ContentType(_) if complete => {
                tracing::debug!(word, "lenient header: dropped a repeated header word");
            }
            Word::Other(word) if complete => {
                if role == Role::Tool && name.is_none() {
                    name = Some(word.to_string());
                } else if recipient.is_none() {
                    recipient = Some(word.to_string());
                } else if content_type.is_none() {
                    content_type = Some(word.to_string());
                } else {
                    tracing::debug!(word, "lenient header: dropped an unexpected header word");
                }
            }
            _ => {
                content = header[offset..].to_string();
                break;
            }
        }
    }
    (
        ParsedHeader {
            author: Author { role, name },
            recipient,
            channel,
            content_type,
        },
        content,
    )
}
