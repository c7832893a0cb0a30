//! Showing a turn as it runs: the [`Renderer`] turns the agent's events into terminal output
//! (styles and hyperlinks only on a terminal), and the status line that ends a turn.
//!
//! Text from the model or a tool is written with its control characters removed
//! ([`strip_controls`]): only ossa's own styles and links reach the terminal as escape
//! sequences, never a page's or the model's (a screen clear, a clipboard write).

use std::collections::BTreeSet;
use std::io::Write;

use ossa::agent::harmony::{HarmonyEncoding, Message, Role};
use ossa::agent::{AgentError, AgentEvent, Finish, Limit, TurnOutcome, TurnReport, tool_message};
use ossa::tools::citations::{CitationStream, StreamChunk};
use ossa::tools::{ToolCall, ToolOutput, strip_controls};

use super::images::{self, Graphics};

/// How turns are shown.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) color: bool,
    pub(super) hide_reasoning: bool,
    pub(super) show_tool_output: bool,
    pub(super) raw: bool,
    /// Terminal columns, for one-line summaries.
    pub(super) width: usize,
    /// How the terminal draws the figures tools write; `None`: they are shown as paths.
    pub(super) images: Option<Graphics>,
}

/// Text styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tone {
    Normal,
    Bold,
    Dim,
    Tool,
    Warn,
    Error,
}

impl Tone {
    fn code(self) -> &'static str {
        match self {
            Tone::Normal => "",
            Tone::Bold => "\x1b[1m",
            Tone::Dim => "\x1b[2m",
            Tone::Tool => "\x1b[36m",
            Tone::Warn => "\x1b[33m",
            Tone::Error => "\x1b[31m",
        }
    }
}

const RESET: &str = "\x1b[0m";

pub(super) fn paint(color: bool, tone: Tone, text: &str) -> String {
    if color && tone != Tone::Normal {
        format!("{}{text}{RESET}", tone.code())
    } else {
        text.to_string()
    }
}

/// A terminal hyperlink (OSC 8) showing `text`.
fn hyperlink(text: &str, url: &str) -> String {
    format!(
        "\x1b]8;;{}\x1b\\{}\x1b]8;;\x1b\\",
        strip_controls(url),
        strip_controls(text)
    )
}

/// What the renderer is printing, so a new kind of output starts on its own line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Reasoning,
    Commentary,
    Final,
    ToolArguments,
    Tool,
}

/// Shows one turn's events on stdout.
pub(super) struct Renderer {
    out: Box<dyn Write + Send>,
    /// For the raw view.
    encoding: HarmonyEncoding,
    view: View,
    section: Section,
    tone: Tone,
    at_line_start: bool,
    /// `→ recipient …` printed while a call's arguments stream (compact view on a terminal).
    call_placeholder: bool,
    /// Pages known before the turn, by cursor, for links while the answer streams.
    page_urls: Vec<String>,
    citations: Option<CitationStream>,
    /// Characters the current citation stream has put out (annotation offsets count from its
    /// start).
    citation_chars: usize,
    /// URLs already shown as links.
    linked: BTreeSet<String>,
    /// Raw view: the end token of the assistant message last shown, not yet printed: a
    /// generation's last message ends with the stop token sampled (`<|return|>` where the
    /// conversation renders `<|end|>`), known when the generation finishes.
    raw_end: Option<u32>,
    /// A cancel was announced: what the turn still streams is not shown.
    cancelling: bool,
}

impl Renderer {
    pub(super) fn new(
        out: Box<dyn Write + Send>,
        encoding: HarmonyEncoding,
        view: View,
        page_urls: Vec<String>,
    ) -> Self {
        Self {
            out,
            encoding,
            view,
            section: Section::None,
            tone: Tone::Normal,
            at_line_start: true,
            call_placeholder: false,
            page_urls,
            citations: None,
            citation_chars: 0,
            linked: BTreeSet::new(),
            raw_end: None,
            cancelling: false,
        }
    }

    fn set_tone(&mut self, tone: Tone) {
        if tone == self.tone || !self.view.color {
            self.tone = tone;
            return;
        }
        let _ = self.out.write_all(RESET.as_bytes());
        let _ = self.out.write_all(tone.code().as_bytes());
        self.tone = tone;
    }

    /// Writes text from the model, a tool or ossa, without its control characters.
    fn write(&mut self, text: &str, tone: Tone) {
        let text = strip_controls(text);
        self.write_styled(&text, tone);
    }

    /// Writes text that may hold ossa's own escape sequences (links): whatever came from the
    /// model or a tool in it must already be stripped.
    fn write_styled(&mut self, text: &str, tone: Tone) {
        if text.is_empty() {
            return;
        }
        self.set_tone(tone);
        let _ = self.out.write_all(text.as_bytes());
        self.at_line_start = text.ends_with('\n');
    }

    /// `text` with every line indented by two spaces.
    fn write_indented(&mut self, text: &str, tone: Tone) {
        for (index, piece) in text.split('\n').enumerate() {
            if index > 0 {
                self.write("\n", tone);
            }
            if !piece.is_empty() {
                if self.at_line_start {
                    self.write("  ", tone);
                }
                self.write(piece, tone);
            }
        }
    }

    fn end_line(&mut self) {
        if !self.at_line_start {
            self.set_tone(Tone::Normal);
            self.write("\n", Tone::Normal);
        }
    }

    /// A line of its own.
    fn line(&mut self, text: &str, tone: Tone) {
        self.end_line();
        self.write(text, tone);
        self.set_tone(Tone::Normal);
        self.write("\n", Tone::Normal);
    }

    fn enter(&mut self, section: Section) {
        if self.section != section {
            if section != Section::Final {
                self.finish_citations();
            }
            self.end_line();
            self.section = section;
        }
    }

    pub(super) fn notice(&mut self, text: &str) {
        if self.at_line_start && self.view.color {
            // Over the terminal's `^C` echo.
            self.set_tone(Tone::Normal);
            let _ = self.out.write_all(b"\r\x1b[2K");
        }
        self.line(text, Tone::Warn);
        let _ = self.out.flush();
    }

    /// Announces a cancel; from here on only how the turn ended is shown, not what it still
    /// streams while it stops.
    pub(super) fn cancelling(&mut self, text: &str) {
        self.notice(text);
        self.cancelling = true;
    }

    pub(super) fn event(&mut self, event: AgentEvent) {
        if self.cancelling {
            return;
        }
        if self.view.raw {
            self.raw_event(event);
        } else {
            self.formatted_event(event);
        }
        let _ = self.out.flush();
    }

    fn formatted_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::GenerationStarted { .. }
            | AgentEvent::GenerationFinished(_)
            | AgentEvent::FinalLogprobs(_) => {}
            AgentEvent::ReasoningDelta(delta) => {
                if !self.view.hide_reasoning {
                    self.enter(Section::Reasoning);
                    self.write(&delta, Tone::Dim);
                }
            }
            AgentEvent::CommentaryDelta(delta) => {
                self.enter(Section::Commentary);
                self.write(&delta, Tone::Normal);
            }
            AgentEvent::FinalDelta(delta) => {
                self.enter(Section::Final);
                let urls = &self.page_urls;
                let chunk = self
                    .citations
                    .get_or_insert_with(|| CitationStream::new(urls.clone()))
                    .push(&delta);
                self.write_chunk(chunk);
            }
            AgentEvent::ToolArgumentsDelta { recipient, delta } => {
                if self.view.show_tool_output {
                    if self.section != Section::ToolArguments {
                        self.enter(Section::ToolArguments);
                        self.line(&format!("→ {recipient}"), Tone::Tool);
                    }
                    self.write_indented(&delta, Tone::Dim);
                } else if self.view.color && self.section != Section::ToolArguments {
                    self.enter(Section::ToolArguments);
                    self.write(&format!("→ {recipient} …"), Tone::Tool);
                    self.call_placeholder = true;
                }
            }
            AgentEvent::Message(_) => {
                if self.section == Section::Final {
                    self.finish_citations();
                }
                // The next message starts on a line of its own.
                if !self.call_placeholder {
                    self.section = Section::None;
                }
            }
            AgentEvent::ToolCall(call) => {
                if self.call_placeholder {
                    self.set_tone(Tone::Normal);
                    let _ = self.out.write_all(b"\r\x1b[2K");
                    self.at_line_start = true;
                    self.call_placeholder = false;
                }
                self.enter(Section::Tool);
                if !self.view.show_tool_output {
                    let prefix = format!("→ {}: ", call.recipient);
                    let room = self.view.width.saturating_sub(prefix.chars().count() + 1);
                    self.line(
                        &format!("{prefix}{}", compact_call(&call, room)),
                        Tone::Tool,
                    );
                }
            }
            AgentEvent::ToolResult { output, .. } => {
                self.enter(Section::Tool);
                if self.view.show_tool_output {
                    self.line(&format!("← {}", output.author), Tone::Tool);
                    let body = output.content.trim_end();
                    for line in body.lines() {
                        self.line(&format!("  {line}"), Tone::Normal);
                    }
                } else {
                    let prefix = format!("← {}: ", output.author);
                    let room = self.view.width.saturating_sub(prefix.chars().count() + 1);
                    self.line(
                        &format!("{prefix}{}", compact_text(&output.content, room)),
                        Tone::Tool,
                    );
                }
                self.files(&output);
            }
            AgentEvent::PageUrls(urls) => self.page_urls = urls,
            AgentEvent::Warning(warning) => {
                self.enter(Section::None);
                self.line(&format!("warning: {warning}"), Tone::Warn);
            }
        }
    }

    fn files(&mut self, output: &ToolOutput) {
        for file in &output.files {
            self.line(&format!("  file: {}", file.display()), Tone::Tool);
            if let Some(graphics) = self.view.images
                && images::is_drawable(file)
            {
                // The image goes straight to the terminal, after what was written before it.
                let _ = self.out.flush();
                let columns = u16::try_from(self.view.width.saturating_sub(2)).unwrap_or(u16::MAX);
                if let Err(e) = images::draw(graphics, file, columns) {
                    self.line(&format!("  ({e})"), Tone::Warn);
                }
            }
        }
    }

    fn write_chunk(&mut self, chunk: StreamChunk) {
        let start = self.citation_chars;
        self.citation_chars += chunk.text.chars().count();
        for annotation in &chunk.annotations {
            self.linked.insert(annotation.url.clone());
        }
        if !self.view.color || chunk.annotations.is_empty() {
            self.write(&chunk.text, Tone::Normal);
            return;
        }
        // On a terminal the ` ([domain](url)) ` of each citation becomes a hyperlink.
        let chars: Vec<char> = chunk.text.chars().collect();
        let mut text = String::new();
        let mut at = 0;
        for annotation in &chunk.annotations {
            let from = annotation
                .start_index
                .saturating_sub(start)
                .min(chars.len());
            let to = annotation.end_index.saturating_sub(start).min(chars.len());
            if from < at {
                continue;
            }
            text.push_str(&strip_controls(&chars[at..from].iter().collect::<String>()));
            text.push_str(&format!(
                " ({}) ",
                hyperlink(&annotation.title, &annotation.url)
            ));
            at = to;
        }
        text.push_str(&strip_controls(&chars[at..].iter().collect::<String>()));
        self.write_styled(&text, Tone::Normal);
    }

    fn finish_citations(&mut self) {
        if let Some(stream) = self.citations.take() {
            let chunk = stream.finish();
            self.write_chunk(chunk);
            self.citation_chars = 0;
        }
    }

    fn raw_event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::Message(message) => {
                self.flush_raw_end(None);
                self.raw_message(&message);
            }
            AgentEvent::GenerationFinished(stats) => {
                let stop = match stats.finish {
                    Finish::Stop(token) => Some(token),
                    _ => None,
                };
                self.flush_raw_end(stop);
            }
            AgentEvent::ToolResult { call, output } => {
                self.flush_raw_end(None);
                self.raw_message(&tool_message(&call, &output));
                if !output.files.is_empty() {
                    self.end_line();
                    self.files(&output);
                }
            }
            AgentEvent::Warning(warning) => self.line(&format!("warning: {warning}"), Tone::Warn),
            _ => {}
        }
    }

    /// One message as harmony text, as the model reads it. An assistant message's end token
    /// is held back (in `raw_end`) for [`Renderer::flush_raw_end`].
    pub(super) fn raw_message(&mut self, message: &Message) {
        let encoding = &self.encoding;
        let mut tokens = match encoding.render(message, None) {
            Ok(tokens) => tokens,
            Err(e) => {
                self.line(&format!("[cannot render a message: {e}]"), Tone::Error);
                return;
            }
        };
        if message.author.role == Role::Assistant {
            self.raw_end = tokens.pop();
        }
        let text = self.decode(&tokens);
        self.write(&text, Tone::Normal);
        let _ = self.out.flush();
    }

    /// Ends the last assistant message shown raw: with `stop` when its generation ended on
    /// that token, else with its rendered end token.
    fn flush_raw_end(&mut self, stop: Option<u32>) {
        if let Some(end) = self.raw_end.take() {
            let text = self.decode(&[stop.unwrap_or(end)]);
            self.write(&text, Tone::Normal);
        }
    }

    fn decode(&self, tokens: &[u32]) -> String {
        self.encoding
            .tokenizer()
            .decode_lossy(tokens)
            .unwrap_or_else(|e| format!("[cannot decode tokens: {e}]"))
    }

    /// After the turn: the rest of the answer, how the turn ended, sources not yet linked, and
    /// the status line.
    pub(super) fn finish(
        mut self,
        result: &Result<TurnReport, AgentError>,
        citation_urls: &[String],
        context_length: usize,
    ) {
        if !self.cancelling {
            self.flush_raw_end(None);
            self.finish_citations();
        }
        self.end_line();
        self.set_tone(Tone::Normal);
        match result {
            Ok(report) => {
                match &report.outcome {
                    TurnOutcome::Final if self.cancelling => self.line(
                        "[the turn had finished before the cancel; /save keeps its answer]",
                        Tone::Warn,
                    ),
                    // Only `ossa serve` declares client functions.
                    TurnOutcome::Final | TurnOutcome::FunctionCalls(_) => {}
                    TurnOutcome::Cancelled => self.line("[cancelled]", Tone::Warn),
                    TurnOutcome::NoAnswer => {
                        self.line("[the model stopped without an answer]", Tone::Warn)
                    }
                    TurnOutcome::Limit(limit) => {
                        self.line(&format!("[stopped: {limit}]"), Tone::Warn);
                        if let Limit::Context { max, .. } = limit {
                            self.line(
                                &format!(
                                    "The context holds {max} tokens (--context N or the config \
                                     file's `context` sets it, up to the model's); /reset \
                                     starts a new conversation."
                                ),
                                Tone::Warn,
                            );
                        }
                    }
                }
                if let Some(answer) = &report.answer
                    && !self.view.raw
                    && !self.cancelling
                {
                    self.sources(answer, citation_urls);
                }
                let status = status_line(report, context_length, resident_memory());
                self.line(&format!("[{status}]"), Tone::Dim);
            }
            Err(error) => self.line(&format!("error: {error}"), Tone::Error),
        }
        let _ = self.out.flush();
    }

    /// Links for the citations of pages opened during the turn (unknown while it streamed).
    fn sources(&mut self, answer: &str, citation_urls: &[String]) {
        let mut lines = Vec::new();
        for cursor in cited_cursors(answer) {
            let Some(url) = citation_urls.get(cursor).filter(|u| !u.is_empty()) else {
                continue;
            };
            if !self.linked.insert(url.clone()) {
                continue;
            }
            let shown = strip_controls(url);
            let domain = shown.split('/').nth(2).unwrap_or(&shown);
            let link = if self.view.color {
                hyperlink(domain, url)
            } else {
                format!("[{domain}]({shown})")
            };
            lines.push(format!("  【{cursor}】 {link}"));
        }
        if !lines.is_empty() {
            self.line("Sources:", Tone::Normal);
            for line in lines {
                self.end_line();
                self.write_styled(&line, Tone::Normal);
                self.write("\n", Tone::Normal);
            }
        }
    }
}

/// The cursors of the browser citations (`【3†L1-L5】`) in `text`, in order, once each.
fn cited_cursors(text: &str) -> Vec<usize> {
    let mut cursors = Vec::new();
    for (at, _) in text.match_indices('【') {
        let rest = &text[at + '【'.len_utf8()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('†') {
            continue;
        }
        if let Ok(cursor) = digits.parse::<usize>()
            && !cursors.contains(&cursor)
        {
            cursors.push(cursor);
        }
    }
    cursors
}

/// `text` cut to `max` characters, with `…` where it was cut.
pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A call's arguments on one line: JSON flattened, code by its first line and a count of the
/// rest.
fn compact_call(call: &ToolCall, max: usize) -> String {
    let content = call.content.trim();
    if content.starts_with('{') {
        let flat = content.split_whitespace().collect::<Vec<_>>().join(" ");
        return truncate(&flat, max);
    }
    compact_text(content, max)
}

/// The first non-blank line of `text`, and how many more there are.
fn compact_text(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(first) = lines.first() else {
        return "(empty)".into();
    };
    let more = match lines.len() - 1 {
        0 => String::new(),
        1 => " (+1 line)".into(),
        n => format!(" (+{n} lines)"),
    };
    let room = max.saturating_sub(more.chars().count()).max(10);
    format!("{}{more}", truncate(first.trim_end(), room))
}

/// This process's resident memory now (Linux's `VmRSS`), in bytes.
pub(super) fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `bytes` for a person: `812 MiB`, `12.4 GiB`.
pub(super) fn size(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

/// Speed, context use, prefix-cache reuse and resident memory of a turn.
fn status_line(report: &TurnReport, context_length: usize, resident: Option<u64>) -> String {
    let mut parts = Vec::new();
    let generated = report.generated_tokens();
    parts.push(format!(
        "{generated} token{}",
        if generated == 1 { "" } else { "s" }
    ));
    let decoded: usize = report
        .generations
        .iter()
        .map(|g| g.generated_tokens.saturating_sub(1))
        .sum();
    let decode_seconds: f64 = report
        .generations
        .iter()
        .map(|g| g.decode.as_secs_f64())
        .sum();
    if decoded > 0 && decode_seconds > 0.0 {
        parts.push(format!("{:.1} tok/s", decoded as f64 / decode_seconds));
    }
    if let Some(last) = report.generations.last() {
        let used = last.prompt_tokens + last.generated_tokens;
        parts.push(format!("context {used}/{context_length}"));
        parts.push(format!(
            "{}/{} prompt tokens cached",
            report.reused_tokens(),
            report.prompt_tokens()
        ));
    }
    match report.tool_calls {
        0 => {}
        1 => parts.push("1 tool call".into()),
        n => parts.push(format!("{n} tool calls")),
    }
    parts.push(format!("{:.1} s", report.elapsed.as_secs_f64()));
    if let Some(bytes) = resident {
        parts.push(format!("{} resident", size(bytes)));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ossa::agent::GenerationStats;

    use super::*;

    #[test]
    fn calls_and_results_fit_one_line() {
        let call = python_call("import math\n\nprint(math.pi)\nprint(2)\n");
        assert_eq!(compact_call(&call, 80), "import math (+2 lines)");
        let search = ToolCall {
            recipient: "browser.search".into(),
            channel: Some("analysis".into()),
            content_type: Some("<|constrain|>json".into()),
            content: "{\n  \"query\": \"rust   wasm\"\n}".into(),
        };
        assert_eq!(compact_call(&search, 80), "{ \"query\": \"rust wasm\" }");
        assert_eq!(compact_call(&search, 10), "{ \"query\"…");
        assert_eq!(compact_text("3795\n", 80), "3795");
        assert_eq!(compact_text("", 80), "(empty)");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }

    #[test]
    fn status_line_reports_speed_context_and_cache() {
        let generation = |prompt, reused, generated, decode_ms| GenerationStats {
            finish: Finish::Stop(0),
            prompt_tokens: prompt,
            reused_tokens: reused,
            generated_tokens: generated,
            prefill: Duration::from_millis(10),
            decode: Duration::from_millis(decode_ms),
        };
        let report = TurnReport {
            outcome: TurnOutcome::Final,
            answer: Some("ok".into()),
            first_message: 2,
            generations: vec![generation(100, 0, 11, 500), generation(120, 110, 21, 500)],
            tool_calls: 1,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            status_line(&report, 1000, Some(13_300_000_000)),
            "32 tokens · 30.0 tok/s · context 141/1000 · 110/220 prompt tokens cached · 1 tool call · 1.5 s · 12.4 GiB resident"
        );
        assert!(status_line(&report, 1000, None).ends_with("· 1.5 s"));
        assert_eq!(size(3 << 20), "3 MiB");
        assert_eq!(size((3 << 20) + 1), "4 MiB");
    }

    /// Output captured for inspection.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn view(color: bool, raw: bool) -> View {
        View {
            color,
            hide_reasoning: false,
            show_tool_output: false,
            raw,
            width: 80,
            images: None,
        }
    }

    /// A renderer writing to a fresh [`Screen`], `pages` known before the turn.
    fn renderer(look: View, pages: Vec<String>) -> (Screen, Renderer) {
        let screen = Screen::default();
        let encoding = HarmonyEncoding::gpt_oss().unwrap();
        let renderer = Renderer::new(Box::new(screen.clone()), encoding, look, pages);
        (screen, renderer)
    }

    /// The model's call of python with `code`.
    fn python_call(code: &str) -> ToolCall {
        ToolCall {
            recipient: "python".into(),
            channel: Some("analysis".into()),
            content_type: Some("code".into()),
            content: code.into(),
        }
    }

    fn stats(finish: Finish) -> GenerationStats {
        GenerationStats {
            finish,
            prompt_tokens: 200,
            reused_tokens: 150,
            generated_tokens: 20,
            prefill: Duration::from_millis(5),
            decode: Duration::from_millis(95),
        }
    }

    fn report(answer: &str, generation: GenerationStats) -> TurnReport {
        TurnReport {
            outcome: TurnOutcome::Final,
            answer: Some(answer.into()),
            first_message: 2,
            generations: vec![generation],
            tool_calls: 0,
            elapsed: Duration::from_millis(100),
        }
    }

    fn final_message(text: &str) -> Message {
        Message::from_role_and_content(Role::Assistant, text).with_channel("final")
    }

    /// Streams `deltas` as a final answer; pages 0 and 1 were known before the turn, page 2 was
    /// opened during it.
    fn show_answer(color: bool, deltas: &[&str]) -> String {
        let before = vec![String::new(), "https://example.com/a%20b".to_string()];
        let (screen, mut renderer) = renderer(view(color, false), before);
        renderer.event(AgentEvent::ReasoningDelta("Found it.".into()));
        for delta in deltas {
            renderer.event(AgentEvent::FinalDelta(delta.to_string()));
        }
        let answer: String = deltas.concat();
        renderer.event(AgentEvent::Message(final_message(&answer)));
        let after = vec![
            String::new(),
            "https://example.com/a%20b".to_string(),
            "https://docs.rs/x".to_string(),
        ];
        renderer.finish(&Ok(report(&answer, stats(Finish::Stop(0)))), &after, 1000);
        screen.text()
    }

    #[test]
    fn citations_become_links() {
        // A citation cut across deltas is held back until it closes.
        let deltas = [
            "It is 42 【1",
            "†L2-L3】 (also 【2†L1】; 【0†L9】).",
            "\nDone.",
        ];
        let plain = show_answer(false, &deltas);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(
            plain.starts_with(
                "Found it.\nIt is 42  ([example.com](https://example.com/a%20b))  \
                 (also 【2†L1】; 【0†L9】).\nDone.\n"
            ),
            "{plain}"
        );
        // Page 2 was opened during the turn: its link comes after the answer. Page 0 is a
        // search result page, which has no URL.
        assert!(
            plain.contains("Sources:\n  【2】 [docs.rs](https://docs.rs/x)\n"),
            "{plain}"
        );
        let status = plain.lines().last().unwrap();
        assert!(status.starts_with("[20 tokens · 200.0 tok/s · context 220/1000 · 150/200 prompt tokens cached · 0.1 s · "), "{plain}");
        assert!(status.ends_with(" resident]"), "{plain}");

        let styled = show_answer(true, &deltas);
        assert!(styled.contains("\x1b[2mFound it."), "{styled:?}");
        assert!(
            styled.contains(
                "It is 42  (\x1b]8;;https://example.com/a%20b\x1b\\example.com\x1b]8;;\x1b\\)  (also"
            ),
            "{styled:?}"
        );
        assert!(
            styled.contains("【2】 \x1b]8;;https://docs.rs/x\x1b\\docs.rs\x1b]8;;\x1b\\"),
            "{styled:?}"
        );
    }

    #[test]
    fn tool_calls_show_on_one_line_with_their_files() {
        let (screen, mut renderer) = renderer(view(false, false), Vec::new());
        let call = python_call("import matplotlib\nplot()\n");
        renderer.event(AgentEvent::ToolArgumentsDelta {
            recipient: "python".into(),
            delta: "import".into(),
        });
        renderer.event(AgentEvent::ToolCall(call.clone()));
        let output = ToolOutput {
            author: "python".into(),
            channel: Some("analysis".into()),
            content: "saved\n".into(),
            files: vec!["/home/me/data/plot.png".into()],
        };
        renderer.event(AgentEvent::ToolResult { call, output });
        assert_eq!(
            screen.text(),
            "→ python: import matplotlib (+1 line)\n← python: saved\n  file: /home/me/data/plot.png\n"
        );
    }

    #[test]
    fn tool_output_in_full_is_indented_under_its_tool() {
        let mut full = view(false, false);
        full.show_tool_output = true;
        let (screen, mut renderer) = renderer(full, Vec::new());
        for delta in ["x = 1", "\nprint(x", " + 1)\n"] {
            renderer.event(AgentEvent::ToolArgumentsDelta {
                recipient: "python".into(),
                delta: delta.into(),
            });
        }
        let call = python_call("x = 1\nprint(x + 1)\n");
        renderer.event(AgentEvent::ToolCall(call.clone()));
        let output = ToolOutput::text(&call, "python", "2\n");
        renderer.event(AgentEvent::ToolResult { call, output });
        renderer.event(AgentEvent::FinalDelta("Two.".into()));
        assert_eq!(
            screen.text(),
            "→ python\n  x = 1\n  print(x + 1)\n← python\n  2\nTwo."
        );
    }

    #[test]
    fn raw_view_prints_harmony_text_with_the_sampled_stop_token() {
        let return_token = HarmonyEncoding::gpt_oss()
            .unwrap()
            .formatting_tokens()
            .return_;
        let (screen, mut renderer) = renderer(view(false, true), Vec::new());
        renderer.raw_message(&Message::from_role_and_content(Role::User, "Hi"));
        renderer.event(AgentEvent::ReasoningDelta("Simple".into()));
        renderer.event(AgentEvent::Message(
            Message::from_role_and_content(Role::Assistant, "Simple greeting.")
                .with_channel("analysis"),
        ));
        renderer.event(AgentEvent::Message(final_message("Hello!")));
        renderer.event(AgentEvent::GenerationFinished(stats(Finish::Stop(
            return_token,
        ))));
        assert_eq!(
            screen.text(),
            "<|start|>user<|message|>Hi<|end|>\
             <|start|>assistant<|channel|>analysis<|message|>Simple greeting.<|end|>\
             <|start|>assistant<|channel|>final<|message|>Hello!<|return|>"
        );
    }

    /// Everything the model or a tool writes (reasoning, answer, call arguments, recipients,
    /// results, file names, warnings), in every view, reaches the screen without its control
    /// characters; ossa's own styles and links are all the escapes left.
    #[test]
    fn escape_sequences_from_the_model_and_tools_are_not_printed() {
        const BAD: &str = "\x1b]52;c;aGk=\x07\x1b[2J\u{9b}2J\u{9d}0;t\u{9c}\x08\r";
        let hostile = |text: &str| format!("{text}{BAD}!");
        let call = ToolCall {
            recipient: hostile("browser.open"),
            channel: Some("analysis".into()),
            content_type: None,
            content: hostile("{\"id\": 1}"),
        };
        let output = ToolOutput {
            author: hostile("browser.open"),
            channel: Some("analysis".into()),
            content: hostile("[1] page\nL0: text"),
            files: vec![hostile("/tmp/plot").into()],
        };
        let events = || {
            vec![
                AgentEvent::ReasoningDelta(hostile("thinking")),
                AgentEvent::CommentaryDelta(hostile("note")),
                AgentEvent::ToolArgumentsDelta {
                    recipient: call.recipient.clone(),
                    delta: call.content.clone(),
                },
                AgentEvent::ToolCall(call.clone()),
                AgentEvent::ToolResult {
                    call: call.clone(),
                    output: output.clone(),
                },
                AgentEvent::Warning(hostile("careful")),
                AgentEvent::FinalDelta(hostile("It is 42 【1†L1】")),
                AgentEvent::Message(final_message(&hostile("It is 42 【1†L1】"))),
            ]
        };
        // ossa's styles, and the return and line erase that replace a call's progress line.
        let ours = [
            "\x1b[0m",
            "\x1b[1m",
            "\x1b[2m",
            "\x1b[36m",
            "\x1b[33m",
            "\x1b[31m",
            "\r\x1b[2K",
        ];
        for (color, raw, full) in [
            (false, false, false),
            (true, false, false),
            (true, false, true),
            (false, true, false),
        ] {
            let mut look = view(color, raw);
            look.show_tool_output = full;
            let pages = vec![String::new(), hostile("https://example.com/p")];
            let (screen, mut renderer) = renderer(look, pages.clone());
            for event in events() {
                renderer.event(event);
            }
            let answer = hostile("It is 42 【1†L1】");
            renderer.finish(&Ok(report(&answer, stats(Finish::Stop(0)))), &pages, 1000);
            let mut text = screen.text();
            assert!(text.contains("]52;c;aGk=[2J2J0;t!"), "{text:?}");
            // What is left once ossa's own styles and links are taken out: no control
            // character but line breaks.
            for code in ours {
                text = text.replace(code, "");
            }
            while let Some(start) = text.find("\x1b]8;;") {
                let end = text[start..].find("\x1b\\").expect("a link ends") + start;
                let url = &text[start + 5..end];
                assert!(!url.contains(|c: char| c.is_control()), "{url:?}");
                text.replace_range(start..end + 2, "");
            }
            assert!(
                !text.contains(|c: char| c.is_control() && c != '\n'),
                "color {color}, raw {raw}, full {full}: {text:?}"
            );
        }
    }

    #[test]
    fn citations_are_found_by_cursor() {
        assert_eq!(
            cited_cursors("A【3†L1-L4】 b【12†L9】 c【3†L2】 d【x†y】 e【"),
            vec![3, 12]
        );
    }
}
