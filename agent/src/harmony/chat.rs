//! Conversation types of the harmony format, with openai-harmony's JSON shape.
//!
//! Serialization writes what openai-harmony's Python `Conversation.to_json()` writes (the form
//! of the conformance fixtures): a message is `{"role", "name", "content": [...], "channel"?,
//! "recipient"?, "content_type"?}` with `name` always present (`null` when unset), content parts
//! tagged by `"type"` (`text`, `system_content`, `developer_content`), and unset fields of
//! system/developer content left out. Deserialization also accepts the Rust crate's form
//! (`null` fields, `content` as a plain string). JSON object key order is kept (tool parameter
//! schemas render in key order), and so is the order of tool namespaces: openai-harmony's
//! Python `Conversation.to_json()` writes them in the order they were added, while its
//! renderer lists them by name (see [`ToolNamespaces`]).

use std::fmt;

use indexmap::IndexMap;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

pub use ossa_tools::spec::{ToolDescription, ToolNamespaceConfig};

/// Who wrote a message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
    Tool,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
            Role::Developer => "developer",
            Role::Tool => "tool",
        }
    }

    /// The role named exactly `name` (lower case, as rendered).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "system" => Some(Role::System),
            "developer" => Some(Role::Developer),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A role name that is not one of harmony's five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected user, assistant, system, developer or tool)")]
pub struct UnknownRole(pub String);

/// A message's author: a role and, for tools, the tool's name (`functions.get_weather`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
}

impl Author {
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Self {
            role,
            name: Some(name.into()),
        }
    }
}

impl From<Role> for Author {
    fn from(role: Role) -> Self {
        Self { role, name: None }
    }
}

/// Reasoning effort the system message asks for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasoningEffort {
    #[serde(alias = "low")]
    Low,
    #[serde(alias = "medium")]
    Medium,
    #[serde(alias = "high")]
    High,
}

impl ReasoningEffort {
    /// As rendered in the system message (`Reasoning: medium`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

/// The channels the system message declares.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ChannelConfig {
    /// Channels the model may use; when empty, the channel line is not rendered.
    #[serde(default)]
    pub valid_channels: Vec<String>,
    /// Whether every assistant message must name a channel.
    #[serde(default)]
    pub channel_required: bool,
}

impl ChannelConfig {
    pub fn require_channels<I, T>(channels: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            valid_channels: channels.into_iter().map(Into::into).collect(),
            channel_required: true,
        }
    }
}

/// The content of the system message.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SystemContent {
    pub model_identity: Option<String>,
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Date the conversation takes place (ISO format), rendered as `Current date: ...`.
    pub conversation_start_date: Option<String>,
    /// End of the model's training data, rendered as `Knowledge cutoff: ...`.
    pub knowledge_cutoff: Option<String>,
    pub channel_config: Option<ChannelConfig>,
    /// Built-in tool namespaces (`browser`, `python`), rendered by name.
    pub tools: Option<ToolNamespaces>,
}

impl Default for SystemContent {
    /// openai-harmony's defaults: ChatGPT identity, medium effort, cutoff 2024-06, channels
    /// analysis/commentary/final required.
    fn default() -> Self {
        Self {
            model_identity: Some(
                "You are ChatGPT, a large language model trained by OpenAI.".to_string(),
            ),
            reasoning_effort: Some(ReasoningEffort::Medium),
            conversation_start_date: None,
            knowledge_cutoff: Some("2024-06".to_string()),
            channel_config: Some(ChannelConfig::require_channels([
                "analysis",
                "commentary",
                "final",
            ])),
            tools: None,
        }
    }
}

/// Tool namespaces by name, in the order they were added: a conversation's JSON keeps that
/// order, like openai-harmony's Python objects (a dict), so a stored conversation reloads as
/// the same document. Rendering does not depend on it: the `# Tools` section lists the
/// namespaces sorted by name, as openai-harmony's renderer (a `BTreeMap`) does.
pub type ToolNamespaces = IndexMap<String, ToolNamespaceConfig>;

/// Adds a namespace at the end, or replaces the one of the same name in its place (as
/// assigning to a Python dict key does).
fn insert_namespace(map: &mut Option<ToolNamespaces>, namespace: ToolNamespaceConfig) {
    map.get_or_insert_with(IndexMap::new)
        .insert(namespace.name.clone(), namespace);
}

/// Builder setters of optional text fields: `with_field(text)` sets `field` to `Some(text)`.
macro_rules! text_setters {
    ($($setter:ident => $field:ident),* $(,)?) => {$(
        pub fn $setter(mut self, $field: impl Into<String>) -> Self {
            self.$field = Some($field.into());
            self
        }
    )*};
}

impl SystemContent {
    pub fn new() -> Self {
        Self::default()
    }
    text_setters!(
        with_model_identity => model_identity,
        with_conversation_start_date => conversation_start_date,
        with_knowledge_cutoff => knowledge_cutoff,
    );
    pub fn with_reasoning_effort(mut self, effort: ReasoningEffort) -> Self {
        self.reasoning_effort = Some(effort);
        self
    }
    pub fn with_channel_config(mut self, channel_config: ChannelConfig) -> Self {
        self.channel_config = Some(channel_config);
        self
    }
    pub fn with_required_channels<I, T>(mut self, channels: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.channel_config = Some(ChannelConfig::require_channels(channels));
        self
    }
    /// Adds (or replaces) a tool namespace, keyed by its name.
    pub fn with_tools(mut self, namespace: ToolNamespaceConfig) -> Self {
        insert_namespace(&mut self.tools, namespace);
        self
    }
    pub fn with_browser_tool(self) -> Self {
        self.with_tools(ToolNamespaceConfig::browser())
    }
    pub fn with_python_tool(self) -> Self {
        self.with_tools(ToolNamespaceConfig::python())
    }
}

/// The content of the developer message: instructions and function tools.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DeveloperContent {
    pub instructions: Option<String>,
    pub tools: Option<ToolNamespaces>,
}

impl DeveloperContent {
    pub fn new() -> Self {
        Self::default()
    }
    text_setters!(with_instructions => instructions);
    /// Adds (or replaces) a tool namespace, keyed by its name.
    pub fn with_tools(mut self, namespace: ToolNamespaceConfig) -> Self {
        insert_namespace(&mut self.tools, namespace);
        self
    }
    /// Sets the `functions` namespace.
    pub fn with_function_tools(self, tools: Vec<ToolDescription>) -> Self {
        self.with_tools(ToolNamespaceConfig::new("functions", None, tools))
    }
}

/// Plain text content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TextContent {
    pub text: String,
}

/// One part of a message's content.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text(TextContent),
    /// Only valid in system messages.
    SystemContent(SystemContent),
    /// Only valid in developer messages.
    DeveloperContent(DeveloperContent),
}

impl Content {
    /// The text, for a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Content::Text(t) => Some(&t.text),
            _ => None,
        }
    }
}

/// Python's form: `type` first for text, last for system/developer content.
impl Serialize for Content {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn fields_then_type<S: Serializer, T: Serialize>(
            serializer: S,
            value: &T,
            type_name: &str,
        ) -> Result<S::Ok, S::Error> {
            let fields = serde_json::to_value(value).map_err(serde::ser::Error::custom)?;
            let serde_json::Value::Object(fields) = fields else {
                return Err(serde::ser::Error::custom(
                    "content did not serialize to an object",
                ));
            };
            let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
            for (key, value) in &fields {
                map.serialize_entry(key, value)?;
            }
            map.serialize_entry("type", type_name)?;
            map.end()
        }
        match self {
            Content::Text(text) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", "text")?;
                map.serialize_entry("text", &text.text)?;
                map.end()
            }
            Content::SystemContent(system) => {
                fields_then_type(serializer, system, "system_content")
            }
            Content::DeveloperContent(developer) => {
                fields_then_type(serializer, developer, "developer_content")
            }
        }
    }
}

impl<T: Into<String>> From<T> for Content {
    fn from(text: T) -> Self {
        Content::Text(TextContent { text: text.into() })
    }
}

impl From<SystemContent> for Content {
    fn from(system: SystemContent) -> Self {
        Content::SystemContent(system)
    }
}

impl From<DeveloperContent> for Content {
    fn from(developer: DeveloperContent) -> Self {
        Content::DeveloperContent(developer)
    }
}

/// One harmony message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub author: Author,
    /// Who the message is for: a tool (`functions.get_weather`, `browser.search`) for a tool
    /// call; `None` means everyone (`"all"` is also not rendered).
    pub recipient: Option<String>,
    pub content: Vec<Content>,
    /// `analysis`, `commentary`, `final`, ...
    pub channel: Option<String>,
    /// e.g. `<|constrain|>json` for a tool call's arguments.
    pub content_type: Option<String>,
}

impl Message {
    pub fn from_author_and_content(author: Author, content: impl Into<Content>) -> Self {
        Self {
            author,
            recipient: None,
            content: vec![content.into()],
            channel: None,
            content_type: None,
        }
    }
    pub fn from_role_and_content(role: Role, content: impl Into<Content>) -> Self {
        Self::from_author_and_content(Author::from(role), content)
    }
    pub fn from_role_and_contents(role: Role, contents: impl IntoIterator<Item = Content>) -> Self {
        Self {
            author: Author::from(role),
            recipient: None,
            content: contents.into_iter().collect(),
            channel: None,
            content_type: None,
        }
    }
    pub fn adding_content(mut self, content: impl Into<Content>) -> Self {
        self.content.push(content.into());
        self
    }
    text_setters!(
        with_channel => channel,
        with_recipient => recipient,
        with_content_type => content_type,
    );

    /// All text parts joined (what a user reads of the message).
    pub fn text(&self) -> String {
        self.content.iter().filter_map(Content::as_text).collect()
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional = [&self.channel, &self.recipient, &self.content_type]
            .iter()
            .filter(|v| v.is_some())
            .count();
        let mut map = serializer.serialize_map(Some(3 + optional))?;
        map.serialize_entry("role", &self.author.role)?;
        map.serialize_entry("name", &self.author.name)?;
        map.serialize_entry("content", &self.content)?;
        if let Some(channel) = &self.channel {
            map.serialize_entry("channel", channel)?;
        }
        if let Some(recipient) = &self.recipient {
            map.serialize_entry("recipient", recipient)?;
        }
        if let Some(content_type) = &self.content_type {
            map.serialize_entry("content_type", content_type)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            role: Role,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            recipient: Option<String>,
            #[serde(default, deserialize_with = "string_or_contents")]
            content: Vec<Content>,
            #[serde(default)]
            channel: Option<String>,
            #[serde(default)]
            content_type: Option<String>,
        }
        let repr = Repr::deserialize(deserializer)?;
        Ok(Message {
            author: Author {
                role: repr.role,
                name: repr.name,
            },
            recipient: repr.recipient,
            content: repr.content,
            channel: repr.channel,
            content_type: repr.content_type,
        })
    }
}

/// `content` as a list of parts or, as the Rust crate writes a single text part, a string.
fn string_or_contents<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Content>, D::Error> {
    struct Visitor;
    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<Content>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of content parts")
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(vec![Content::from(value)])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// A list of messages.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    pub fn from_messages(messages: impl IntoIterator<Item = Message>) -> Self {
        Self {
            messages: messages.into_iter().collect(),
        }
    }

    /// The JSON openai-harmony's `Conversation.to_json()` writes.
    pub fn to_json(&self) -> String {
        // A conversation is strings, maps and numbers taken from JSON: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "conversation did not serialize");
            String::from("{\"messages\":[]}")
        })
    }

    /// Reads openai-harmony's conversation JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl<'a> IntoIterator for &'a Conversation {
    type Item = &'a Message;
    type IntoIter = std::slice::Iter<'a, Message>;
    fn into_iter(self) -> Self::IntoIter {
        self.messages.iter()
    }
}
