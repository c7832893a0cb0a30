//! Rendering conversations to tokens, token for token as openai-harmony 0.0.8.

use ossa_engine::tokenizer::Tokenizer;

use super::chat::{Content, Conversation, DeveloperContent, Message, Role, SystemContent};
use super::error::HarmonyError;
use super::typescript::tools_section;

/// Ids of the formatting tokens the format is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormattingTokens {
    pub start: u32,
    pub message: u32,
    pub end: u32,
    /// `<|return|>`: the assistant is done with its turn.
    pub return_: u32,
    /// `<|call|>`: the assistant message is a tool call.
    pub call: u32,
    pub channel: u32,
    pub constrain: u32,
}

impl FormattingTokens {
    /// Looks the tokens up by their text.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, HarmonyError> {
        let id = |text: &'static str| {
            tokenizer
                .token_id(text)
                .ok_or(HarmonyError::MissingFormattingToken(text))
        };
        Ok(Self {
            start: id("<|start|>")?,
            message: id("<|message|>")?,
            end: id("<|end|>")?,
            return_: id("<|return|>")?,
            call: id("<|call|>")?,
            channel: id("<|channel|>")?,
            constrain: id("<|constrain|>")?,
        })
    }
}

/// How a whole conversation is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderConversationConfig {
    /// Leave out the chain of thought of finished turns (see
    /// [`HarmonyEncoding::render_conversation_into`]).
    pub auto_drop_analysis: bool,
}

impl Default for RenderConversationConfig {
    fn default() -> Self {
        Self {
            auto_drop_analysis: true,
        }
    }
}

/// Facts about the whole conversation that change how one message renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// Adds "Calls to these tools must go to the commentary channel: 'functions'." to the
    /// system message's channel line.
    pub conversation_has_function_tools: bool,
}

/// The harmony format over a tokenizer: renders conversations and parses completions.
#[derive(Debug, Clone)]
pub struct HarmonyEncoding {
    tokenizer: Tokenizer,
    tokens: FormattingTokens,
}

impl HarmonyEncoding {
    /// The format over `tokenizer`, which must define harmony's formatting tokens.
    pub fn new(tokenizer: Tokenizer) -> Result<Self, HarmonyError> {
        let tokens = FormattingTokens::from_tokenizer(&tokenizer)?;
        Ok(Self { tokenizer, tokens })
    }

    /// gpt-oss's format over the built-in o200k_harmony tokenizer.
    pub fn gpt_oss() -> Result<Self, HarmonyError> {
        Self::new(Tokenizer::o200k_harmony()?)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn formatting_tokens(&self) -> &FormattingTokens {
        &self.tokens
    }

    /// Tokens that end a sampled message: `<|return|>`, `<|end|>`, `<|call|>` (ascending).
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops = vec![self.tokens.return_, self.tokens.end, self.tokens.call];
        stops.sort_unstable();
        stops
    }

    /// Tokens that end an assistant's action (a finished turn or a tool call):
    /// `<|return|>`, `<|call|>` (ascending). Sampling continues past `<|end|>`.
    pub fn stop_tokens_for_assistant_actions(&self) -> Vec<u32> {
        let mut stops = vec![self.tokens.return_, self.tokens.call];
        stops.sort_unstable();
        stops
    }

    fn text_into(&self, text: &str, into: &mut Vec<u32>) -> Result<(), HarmonyError> {
        self.tokenizer.encode_ordinary_into(text, into)?;
        Ok(())
    }

    /// Renders one message (its header, content and end token).
    pub fn render(
        &self,
        message: &Message,
        options: Option<&RenderOptions>,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = Vec::new();
        self.render_into(message, &mut out, options)?;
        Ok(out)
    }

    /// Renders one message onto `into`.
    pub fn render_into(
        &self,
        message: &Message,
        into: &mut Vec<u32>,
        options: Option<&RenderOptions>,
    ) -> Result<(), HarmonyError> {
        let t = &self.tokens;
        into.push(t.start);
        if message.author.role == Role::Tool {
            // A tool's message is headed by the tool's name alone.
            let name = message
                .author
                .name
                .as_deref()
                .ok_or(HarmonyError::ToolWithoutName)?;
            self.text_into(name, into)?;
        } else {
            self.text_into(message.author.role.as_str(), into)?;
            if let Some(name) = &message.author.name {
                self.text_into(&format!(":{name}"), into)?;
            }
        }
        if let Some(recipient) = &message.recipient
            && recipient != "all"
        {
            self.text_into(&format!(" to={recipient}"), into)?;
        }
        if let Some(channel) = &message.channel {
            into.push(t.channel);
            self.text_into(channel, into)?;
        }
        if let Some(content_type) = &message.content_type {
            match content_type.strip_prefix("<|constrain|>") {
                Some(rest) => {
                    self.text_into(" ", into)?;
                    into.push(t.constrain);
                    self.text_into(rest, into)?;
                }
                None => self.text_into(&format!(" {content_type}"), into)?,
            }
        }
        into.push(t.message);
        for content in &message.content {
            match content {
                Content::Text(text) => self.text_into(&text.text, into)?,
                Content::SystemContent(system) => {
                    if message.author.role != Role::System {
                        return Err(HarmonyError::SystemContentOutsideSystem(
                            message.author.role,
                        ));
                    }
                    self.text_into(&system_text(system, options), into)?;
                }
                Content::DeveloperContent(developer) => {
                    if message.author.role != Role::Developer {
                        return Err(HarmonyError::DeveloperContentOutsideDeveloper(
                            message.author.role,
                        ));
                    }
                    self.text_into(&developer_text(developer), into)?;
                }
            }
        }
        // Any recipient, even "all", makes an assistant message a call.
        let end = if message.author.role == Role::Assistant && message.recipient.is_some() {
            t.call
        } else {
            t.end
        };
        into.push(end);
        Ok(())
    }

    /// Renders a conversation onto `into`.
    ///
    /// Chain-of-thought dropping (openai-harmony's rule): only when `config` is given with
    /// `auto_drop_analysis` and the last assistant message is on channel `final`, every message
    /// (any role) on channel `analysis` that comes before the first message (any role) on
    /// channel `final` is left out. Analysis after that first `final` stays, even when a later
    /// `final` exists. With `config` `None`, nothing is dropped.
    pub fn render_conversation_into<'a>(
        &self,
        conversation: impl IntoIterator<Item = &'a Message>,
        into: &mut Vec<u32>,
        config: Option<&RenderConversationConfig>,
    ) -> Result<(), HarmonyError> {
        let messages: Vec<&Message> = conversation.into_iter().collect();
        let options = RenderOptions {
            conversation_has_function_tools: has_function_tools(&messages),
        };
        let last_assistant_is_final = messages
            .iter()
            .rev()
            .find(|m| m.author.role == Role::Assistant)
            .is_some_and(|m| m.channel.as_deref() == Some("final"));
        let drop_analysis = config.is_some_and(|c| c.auto_drop_analysis) && last_assistant_is_final;
        let first_final = messages
            .iter()
            .position(|m| m.channel.as_deref() == Some("final"));
        for (index, message) in messages.iter().enumerate() {
            let before_first_final = first_final.is_some_and(|first| index < first);
            if drop_analysis && before_first_final && message.channel.as_deref() == Some("analysis")
            {
                continue;
            }
            self.render_into(message, into, Some(&options))?;
        }
        Ok(())
    }

    /// Renders a conversation.
    pub fn render_conversation<'a>(
        &self,
        conversation: impl IntoIterator<Item = &'a Message>,
        config: Option<&RenderConversationConfig>,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = Vec::new();
        self.render_conversation_into(conversation, &mut out, config)?;
        Ok(out)
    }

    /// Renders a conversation as a prompt: the conversation, then `<|start|>{next_turn_role}`.
    pub fn render_conversation_for_completion<'a>(
        &self,
        conversation: impl IntoIterator<Item = &'a Message>,
        next_turn_role: Role,
        config: Option<&RenderConversationConfig>,
    ) -> Result<Vec<u32>, HarmonyError> {
        let mut out = Vec::new();
        self.render_conversation_into(conversation, &mut out, config)?;
        out.push(self.tokens.start);
        self.text_into(next_turn_role.as_str(), &mut out)?;
        Ok(out)
    }

    /// Renders a conversation as a training example: when the last message is the assistant's
    /// on channel `final`, its end token becomes `<|return|>`.
    pub fn render_conversation_for_training<'a>(
        &self,
        conversation: impl IntoIterator<Item = &'a Message>,
        config: Option<&RenderConversationConfig>,
    ) -> Result<Vec<u32>, HarmonyError> {
        let messages: Vec<&Message> = conversation.into_iter().collect();
        let mut out = Vec::new();
        self.render_conversation_into(messages.iter().copied(), &mut out, config)?;
        if let Some(last) = messages.last()
            && last.author.role == Role::Assistant
            && last.channel.as_deref() == Some("final")
            && let Some(token) = out.last_mut()
        {
            *token = self.tokens.return_;
        }
        Ok(out)
    }

    /// Renders a whole [`Conversation`] as a prompt for the assistant (default config).
    pub fn prompt(&self, conversation: &Conversation) -> Result<Vec<u32>, HarmonyError> {
        self.render_conversation_for_completion(
            conversation,
            Role::Assistant,
            Some(&RenderConversationConfig::default()),
        )
    }
}

fn has_function_tools(messages: &[&Message]) -> bool {
    messages
        .iter()
        .flat_map(|m| m.content.iter())
        .any(|content| match content {
            Content::DeveloperContent(developer) => developer
                .tools
                .as_ref()
                .and_then(|tools| tools.get("functions"))
                .is_some_and(|functions| !functions.tools.is_empty()),
            _ => false,
        })
}

/// The text of a system message.
fn system_text(system: &SystemContent, options: Option<&RenderOptions>) -> String {
    let mut sections = Vec::new();
    let mut top = Vec::new();
    if let Some(identity) = &system.model_identity {
        top.push(identity.clone());
    }
    if let Some(cutoff) = &system.knowledge_cutoff {
        top.push(format!("Knowledge cutoff: {cutoff}"));
    }
    if let Some(date) = &system.conversation_start_date {
        top.push(format!("Current date: {date}"));
    }
    if !top.is_empty() {
        sections.push(top.join("\n"));
    }
    if let Some(effort) = system.reasoning_effort {
        sections.push(format!("Reasoning: {}", effort.as_str()));
    }
    if let Some(tools) = &system.tools
        && !tools.is_empty()
    {
        sections.push(tools_section(tools));
    }
    if let Some(channels) = &system.channel_config
        && !channels.valid_channels.is_empty()
    {
        let mut line = format!("# Valid channels: {}.", channels.valid_channels.join(", "));
        if channels.channel_required {
            line.push_str(" Channel must be included for every message.");
        }
        if options.is_some_and(|o| o.conversation_has_function_tools) {
            line.push_str("\nCalls to these tools must go to the commentary channel: 'functions'.");
        }
        sections.push(line);
    }
    sections.join("\n\n")
}

/// The text of a developer message.
fn developer_text(developer: &DeveloperContent) -> String {
    let mut sections = Vec::new();
    if let Some(instructions) = &developer.instructions {
        sections.push("# Instructions".to_string());
        sections.push(instructions.clone());
    }
    if let Some(tools) = &developer.tools
        && !tools.is_empty()
    {
        sections.push(tools_section(tools));
    }
    sections.join("\n\n")
}
