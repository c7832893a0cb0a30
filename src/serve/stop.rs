//! `stop` strings (read as [`super::wire::request::Stop`]), found in text as it streams.

/// The first stop string in `text` that ends after byte `from` (text before it was searched
/// already): where it starts, and which it is.
pub fn find(text: &str, from: usize, stops: &[String]) -> Option<(usize, String)> {
    stops
        .iter()
        .filter_map(|stop| {
            let start = floor_char_boundary(text, from.saturating_sub(stop.len()));
            text[start..]
                .find(stop.as_str())
                .map(|i| (start + i, stop.clone()))
        })
        .min_by_key(|(at, _)| *at)
}

pub fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Text of one message cut at the first stop string, shown as it streams: what could be the
/// start of a stop string is held back until the next piece (or the message's end) tells.
pub struct StopText {
    stops: Vec<String>,
    /// Bytes held back: one less than the longest stop string.
    hold: usize,
    text: String,
    sent: usize,
    hit: bool,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> Self {
        let hold = stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .saturating_sub(1);
        Self {
            stops,
            hold,
            text: String::new(),
            sent: 0,
            hit: false,
        }
    }

    /// Whether a stop string was found: nothing more is shown.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Adds a piece of the message; returns what may be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        if let Some((at, _)) = find(&self.text, self.sent, &self.stops) {
            self.text.truncate(at);
            self.hit = true;
        }
        let safe = if self.hit {
            self.text.len()
        } else {
            floor_char_boundary(&self.text, self.text.len().saturating_sub(self.hold))
        };
        self.take_to(safe)
    }

    /// The message ended: what was held back is shown, and the next message starts afresh.
    pub fn end_message(&mut self) -> String {
        let rest = self.take_to(self.text.len());
        self.text.clear();
        self.sent = 0;
        rest
    }

    fn take_to(&mut self, end: usize) -> String {
        let end = end.max(self.sent);
        let shown = self.text[self.sent..end].to_string();
        self.sent = end;
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut stop = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut shown: Vec<String> = pieces.iter().map(|p| stop.push(p)).collect();
        shown.push(stop.end_message());
        (shown, stop.hit())
    }

    #[test]
    fn a_stop_string_split_across_pieces_cuts_the_text_before_it() {
        let (shown, hit) = stream(&["END"], &["one two E", "N", "D three"]);
        assert_eq!(shown.concat(), "one two ");
        assert!(hit);
        // Nothing of the stop string was shown before it was known not to be one.
        assert_eq!(shown[0], "one two");
    }

    #[test]
    fn held_back_text_that_is_no_stop_comes_out_at_the_message_end() {
        let (shown, hit) = stream(&["ENDING", "x"], &["Ein Bär END"]);
        assert_eq!(shown.concat(), "Ein Bär END");
        assert!(!hit);
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (shown, hit) = stream(&["three", "two"], &["one two three"]);
        assert_eq!(shown.concat(), "one ");
        assert!(hit);
    }

    #[test]
    fn stop_must_be_strings() {
        use crate::serve::wire::request::{Stop, parse};
        let read = |value: serde_json::Value| parse::<Stop>("stop", &value);
        assert_eq!(
            read(serde_json::json!(["a", ""])).ok(),
            Some(Stop(vec!["a".to_string()]))
        );
        assert_eq!(
            read(serde_json::json!("END")).ok(),
            Some(Stop(vec!["END".to_string()]))
        );
        for bad in [serde_json::json!([1]), serde_json::json!({"a": 1})] {
            let error = read(bad).expect_err("not strings");
            assert_eq!(error.param.as_deref(), Some("stop"), "{error}");
        }
    }
}
