//! The scripted model: replies written as harmony messages or text, replayed as the token ids
//! a model would sample, with every prompt recorded. [`ScriptedBackend`] is an
//! `ossa_agent::Backend` for in-process agents and servers; [`Script`] alone also feeds the
//! root tests' HTTP look-alikes of remote servers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ossa_agent::harmony::{HarmonyEncoding, Message, Role};
use ossa_agent::{Backend, BackendError, Finish, GenerationRequest, GenerationStats};

/// The gpt-oss harmony encoding, built once per test binary.
pub fn encoding() -> &'static HarmonyEncoding {
    static ENCODING: OnceLock<HarmonyEncoding> = OnceLock::new();
    ENCODING.get_or_init(|| HarmonyEncoding::gpt_oss().expect("o200k_harmony"))
}

/// The tokens of harmony `text` (special tokens allowed).
pub fn tokens(text: &str) -> Vec<u32> {
    encoding()
        .tokenizer()
        .encode(text, true)
        .expect("script tokenizes")
}

/// The model's reasoning (`analysis`), as a script writes it.
pub fn analysis(text: &str) -> Message {
    Message::from_role_and_content(Role::Assistant, text).with_channel("analysis")
}

/// The model's final answer.
pub fn final_answer(text: &str) -> Message {
    Message::from_role_and_content(Role::Assistant, text).with_channel("final")
}

/// A call of the function `recipient` with JSON `arguments` (`commentary`, constrained to JSON).
pub fn call(recipient: &str, arguments: impl std::fmt::Display) -> Message {
    Message::from_role_and_content(Role::Assistant, arguments.to_string())
        .with_channel("commentary")
        .with_recipient(recipient)
        .with_content_type("<|constrain|>json")
}

/// Python `code` for the python tool (in `analysis`, as gpt-oss writes it).
pub fn python_call(code: &str) -> Message {
    analysis(code)
        .with_recipient("python")
        .with_content_type("code")
}

/// The tokens the model samples after `<|start|>assistant` to write `messages` (a final answer
/// ends with `<|return|>`, a call with `<|call|>`).
pub fn sampled(encoding: &HarmonyEncoding, messages: &[Message]) -> Vec<u32> {
    let mut tokens = Vec::new();
    for message in messages {
        tokens.extend(encoding.render(message, None).expect("renders"));
    }
    // The prompt already ends with `<|start|>assistant`.
    let header = encoding
        .render(&Message::from_role_and_content(Role::Assistant, ""), None)
        .expect("renders");
    assert_eq!(tokens[..2], header[..2]);
    tokens.drain(..2);
    if let Some(last) = tokens.last_mut()
        && *last == encoding.formatting_tokens().end
        && messages
            .last()
            .is_some_and(|m| m.channel.as_deref() == Some("final"))
    {
        *last = encoding.formatting_tokens().return_;
    }
    tokens
}

/// Replies to hand out in order, and the prompts they answered.
#[derive(Default)]
pub struct Script {
    replies: Mutex<VecDeque<Vec<u32>>>,
    prompts: Mutex<Vec<Vec<u32>>>,
}

impl Script {
    pub fn push(&self, tokens: Vec<u32>) {
        self.replies.lock().expect("lock").push_back(tokens);
    }

    /// Records `prompt` and takes the next reply (`None`: none scripted).
    pub fn answer(&self, prompt: &[u32]) -> Option<Vec<u32>> {
        self.record(prompt);
        self.replies.lock().expect("lock").pop_front()
    }

    /// Records `prompt` without taking a reply.
    pub fn record(&self, prompt: &[u32]) {
        self.prompts.lock().expect("lock").push(prompt.to_vec());
    }

    pub fn prompts(&self) -> Vec<Vec<u32>> {
        self.prompts.lock().expect("lock").clone()
    }

    pub fn replies_left(&self) -> usize {
        self.replies.lock().expect("lock").len()
    }
}

/// What the model does for one generation.
pub enum Reply {
    /// Writes these tokens.
    Tokens(Vec<u32>),
    /// Writes `<|channel|>analysis<|message|> thinking`, then ` thinking` every 5 ms until the
    /// request is cancelled (or two minutes pass, so that a test that fails does not hang).
    ThinkUntilCancelled,
    /// Fails the way a backend fails; `backend` names it (a model folder, a URL).
    Fail { backend: String, message: String },
}

/// Chooses the reply from the prompt (decoded).
type Rule = Box<dyn Fn(&str) -> Reply + Send + Sync>;

/// The longest a [`Reply::ThinkUntilCancelled`] thinks.
const THINKING_LIMIT: Duration = Duration::from_secs(120);

/// A model that replays its [`Script`], one reply per generation (or answers by a rule), and
/// records the prompts.
pub struct ScriptedBackend {
    pub script: Script,
    context_length: usize,
    /// Sleep between tokens (for cancellation tests).
    token_delay: Duration,
    /// When set, each reply is the rule's for the prompt instead of the script's next.
    rule: Option<Rule>,
    /// Whether an empty scripted reply thinks until cancelled.
    endless_when_empty: bool,
    cancelled: AtomicUsize,
}

impl ScriptedBackend {
    /// No replies yet; `context_length` is what it reports.
    pub fn new(context_length: usize) -> Self {
        ScriptedBackend {
            script: Script::default(),
            context_length,
            token_delay: Duration::ZERO,
            rule: None,
            endless_when_empty: false,
            cancelled: AtomicUsize::new(0),
        }
    }

    /// Replies written as harmony text, in order, with a 128k context.
    pub fn with_texts(replies: &[&str]) -> Self {
        let backend = ScriptedBackend::new(131_072);
        replies.iter().for_each(|r| backend.script.push(tokens(r)));
        backend
    }

    /// Answers every prompt with `rule`'s reply for it (the prompt decoded).
    pub fn answering(
        context_length: usize,
        rule: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        ScriptedBackend {
            rule: Some(Box::new(rule)),
            ..ScriptedBackend::new(context_length)
        }
    }

    /// Sleeps `delay` before each token.
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// An empty scripted reply is [`Reply::ThinkUntilCancelled`].
    pub fn endless_when_empty(mut self) -> Self {
        self.endless_when_empty = true;
        self
    }

    /// How many generations it was asked for.
    pub fn calls(&self) -> usize {
        self.script.prompts().len()
    }

    pub fn prompts(&self) -> Vec<Vec<u32>> {
        self.script.prompts()
    }

    /// The prompts, decoded.
    pub fn prompt_texts(&self) -> Vec<String> {
        self.prompts().iter().map(|p| decode(p)).collect()
    }

    /// How many generations that thought until cancelled were cancelled.
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn next_reply(&self, prompt: &[u32]) -> Reply {
        if let Some(rule) = &self.rule {
            self.script.record(prompt);
            return rule(&decode(prompt));
        }
        match self.script.answer(prompt) {
            None => Reply::Fail {
                backend: "scripted".into(),
                message: "no reply scripted".into(),
            },
            Some(reply) if reply.is_empty() && self.endless_when_empty => {
                Reply::ThinkUntilCancelled
            }
            Some(reply) => Reply::Tokens(reply),
        }
    }
}

fn decode(tokens: &[u32]) -> String {
    encoding().tokenizer().decode(tokens).unwrap_or_default()
}

impl Backend for ScriptedBackend {
    fn name(&self) -> String {
        "scripted".into()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        match self.next_reply(request.prompt) {
            Reply::Tokens(reply) => Ok(replay(request, &reply, self.token_delay, on_token)),
            Reply::ThinkUntilCancelled => {
                let thinking = tokens("<|channel|>analysis<|message|> thinking");
                let stats = think_until_cancelled(request, &thinking, on_token);
                if stats.finish == Finish::Cancelled {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                }
                Ok(stats)
            }
            Reply::Fail { backend, message } => Err(BackendError::Failed { backend, message }),
        }
    }
}

/// How a generation of `generated` tokens ended, as a backend reports it.
fn stats(request: &GenerationRequest<'_>, finish: Finish, generated: usize) -> GenerationStats {
    GenerationStats {
        finish,
        prompt_tokens: request.prompt.len(),
        reused_tokens: 0,
        generated_tokens: generated,
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
    }
}

/// Hands `tokens` to `on_token` the way a model samples them, `delay` apart: it stops when the
/// request is cancelled, at its `max_tokens`, or after one of its stop tokens.
fn replay(
    request: &GenerationRequest<'_>,
    tokens: &[u32],
    delay: Duration,
    on_token: &mut dyn FnMut(u32),
) -> GenerationStats {
    let mut finish = Finish::MaxTokens;
    let mut generated = 0;
    for &token in tokens {
        if request.cancel.is_cancelled() {
            finish = Finish::Cancelled;
            break;
        }
        if generated == request.max_tokens {
            break;
        }
        std::thread::sleep(delay);
        on_token(token);
        generated += 1;
        if request.stop_tokens.contains(&token) {
            finish = Finish::Stop(token);
            break;
        }
    }
    stats(request, finish, generated)
}

/// Writes `thinking`, then its last token again every 5 ms until the request is cancelled or
/// [`THINKING_LIMIT`] has passed. Counts the repeated tokens.
fn think_until_cancelled(
    request: &GenerationRequest<'_>,
    thinking: &[u32],
    on_token: &mut dyn FnMut(u32),
) -> GenerationStats {
    let (head, word) = thinking.split_at(thinking.len() - 1);
    head.iter().for_each(|&t| on_token(t));
    let start = Instant::now();
    let mut generated = 0;
    while start.elapsed() < THINKING_LIMIT {
        if request.cancel.is_cancelled() {
            return stats(request, Finish::Cancelled, generated);
        }
        on_token(word[0]);
        generated += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    stats(request, Finish::MaxTokens, generated)
}
