//! Function tools served by MCP servers, over stdio (a child process) or streamable HTTP.
//!
//! Each configured server is started (or reached) once, its tools are listed, and every tool
//! becomes a function in the developer message's `functions` namespace with the server's own
//! JSON schema. Naming: a tool keeps its name unless another function (declared in Rust, or on
//! another server) has the same one; then every MCP tool of that name becomes
//! `{server}__{tool}`. Characters a function name cannot hold (anything but ASCII letters,
//! digits, `_` and `-`) become `_`.
//!
//! A server that crashes does not take the conversation with it: the call that was running gets
//! a message saying the server stopped (with the last lines it wrote to stderr), and the next
//! call starts it again.
//!
//! What a server gets and gives back is bounded:
//! - A stdio server does not inherit ossa's environment (where API keys live). It sees the
//!   variables in [`INHERITED_VARIABLES`] (and `LC_*`), the ones its config passes through by
//!   name (`env_vars`) and the ones its config sets (`env`).
//! - The model reads at most `max_result_bytes` of a result ([`DEFAULT_MAX_RESULT_BYTES`]); the
//!   rest is cut with a note saying how much. No message larger than [`MAX_MESSAGE_BYTES`] is
//!   read into memory: a stdio server that sends one is stopped (and started again on the next
//!   call), and over HTTP the call fails.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{
    ClientInitializeError, RoleClient, RunningService, RxJsonRpcMessage, ServiceError, ServiceExt,
    TxJsonRpcMessage,
};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, Transport as RmcpTransport};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::function::{
    ArgumentSchema, Function, FunctionError, FunctionTools, is_valid_function_name,
};
use crate::schema::{SchemaTooLarge, prompt_schema};
use crate::spec::ToolDescription;

const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of a result the model reads unless `max_result_bytes` says otherwise: about 16k
/// tokens, an eighth of gpt-oss's context, so one tool call cannot crowd out the conversation.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 64 * 1024;

/// The largest message read from a server (one JSON-RPC message: a stdio line, an HTTP body or
/// one server-sent event), the same as rmcp's HTTP defaults. Larger ones are refused while they
/// are read, before they are held in memory, so a server streaming a gigantic or endless result
/// costs ossa at most this much (and the parsed copy of it).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The variables a stdio server inherits from ossa's environment (besides `LC_*`), as the MCP
/// reference SDKs do: where the program and its launcher (`npx`, `uvx`, a shell script) find
/// programs (`PATH`), their caches and configuration (`HOME`, the XDG base directories), who the
/// user is (`USER`, `LOGNAME`), the shell for scripts (`SHELL`), the terminal type (`TERM`),
/// text encoding and time zone (`LANG`, `LANGUAGE`, `TZ`) and where temporary files go
/// (`TMPDIR`). None of these usually holds a secret; anything else must be named in `env_vars`.
#[cfg(unix)]
pub const INHERITED_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    // macOS: CoreFoundation's text encoding, without which programs guess the wrong one.
    "__CF_USER_TEXT_ENCODING",
];

/// On Windows also what starting a program needs at all: `SYSTEMROOT` (networking fails without
/// it), `PATHEXT` and `COMSPEC` (to run `npx.cmd`), and the user's profile folders.
#[cfg(windows)]
pub const INHERITED_VARIABLES: &[&str] = &[
    "PATH",
    "PATHEXT",
    "COMSPEC",
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "USERNAME",
    "USERDOMAIN",
    "USERPROFILE",
    "HOMEDRIVE",
    "HOMEPATH",
    "APPDATA",
    "LOCALAPPDATA",
    "PROGRAMDATA",
    "PROGRAMFILES",
    "PROGRAMFILES(X86)",
    "PROGRAMW6432",
    "PROCESSOR_ARCHITECTURE",
    "TEMP",
    "TMP",
];
/// Lines of a stdio server's stderr kept for crash reports.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_MAX_CHARS: usize = 400;

/// One MCP server in ossa's config file:
///
/// ```toml
/// [[mcp_servers]]
/// name = "files"
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]
/// env = { LOG_LEVEL = "warn" }
/// env_vars = ["GITHUB_TOKEN"]
///
/// [[mcp_servers]]
/// name = "tracker"
/// url = "https://mcp.example.com/mcp"
/// bearer_token_env_var = "TRACKER_TOKEN"
/// ```
///
/// Exactly one of `command` (stdio) and `url` (streamable HTTP) is given.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Short name used in messages and to prefix colliding tool names.
    pub name: String,
    /// Program to start; the server speaks MCP on its stdin/stdout.
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Variables set for the program, over what it inherits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables of ossa's environment passed on to the program by name (each must be set). It
    /// inherits only [`INHERITED_VARIABLES`] and `LC_*` otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_vars: Vec<String>,
    /// Working directory of the program (default: ossa's).
    pub cwd: Option<PathBuf>,
    /// Streamable-HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    pub url: Option<String>,
    /// Extra HTTP headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding a bearer token (kept out of the config file).
    pub bearer_token_env_var: Option<String>,
    /// How long starting and listing tools may take (default 30).
    pub startup_timeout_secs: Option<u64>,
    /// How long one tool call may take (default 120).
    pub call_timeout_secs: Option<u64>,
    /// The most bytes of one result the model reads (default [`DEFAULT_MAX_RESULT_BYTES`], at
    /// most [`MAX_MESSAGE_BYTES`]); the rest is cut, with a note saying how much.
    pub max_result_bytes: Option<usize>,
}

impl McpServerConfig {
    /// A stdio server.
    pub fn stdio(name: impl Into<String>, command: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command: Some(command.into()),
            args,
            ..Self::default()
        }
    }

    /// A streamable-HTTP server.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    fn startup_timeout(&self) -> Duration {
        self.startup_timeout_secs
            .map_or(DEFAULT_STARTUP_TIMEOUT, Duration::from_secs)
    }

    fn call_timeout(&self) -> Duration {
        self.call_timeout_secs
            .map_or(DEFAULT_CALL_TIMEOUT, Duration::from_secs)
    }

    fn max_result_bytes(&self) -> usize {
        self.max_result_bytes.unwrap_or(DEFAULT_MAX_RESULT_BYTES)
    }

    /// The environment of a stdio server's program: what it inherits from `parent` (ossa's
    /// environment), then `env_vars`, then `env`.
    fn child_environment(
        &self,
        parent: impl Fn(&str) -> Option<OsString>,
        parent_names: impl Iterator<Item = OsString>,
    ) -> Result<Vec<(OsString, OsString)>, String> {
        let mut environment: BTreeMap<OsString, OsString> = BTreeMap::new();
        let locale =
            parent_names.filter(|name| name.to_str().is_some_and(|n| n.starts_with("LC_")));
        let inherited = INHERITED_VARIABLES
            .iter()
            .map(|name| OsString::from(*name))
            .chain(locale);
        for name in inherited {
            let Some(text) = name.to_str() else { continue };
            // A value starting with `()` is an exported shell function, which no server needs.
            if let Some(value) = parent(text)
                && !value.as_encoded_bytes().starts_with(b"()")
            {
                environment.insert(name, value);
            }
        }
        for name in &self.env_vars {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!("`env_vars`: `{name}` is not a variable name"));
            }
            let value = parent(name)
                .ok_or_else(|| format!("environment variable `{name}` (env_vars) is not set"))?;
            environment.insert(name.into(), value);
        }
        for (name, value) in &self.env {
            environment.insert(name.into(), value.into());
        }
        Ok(environment.into_iter().collect())
    }

    fn transport(&self) -> Result<Transport, McpError> {
        let problem = |problem: String| McpError::Config {
            server: self.name.clone(),
            problem,
        };
        if self.name.is_empty() {
            return Err(problem("`name` is empty".into()));
        }
        let max_result_bytes = self.max_result_bytes();
        if max_result_bytes == 0 || max_result_bytes > MAX_MESSAGE_BYTES {
            return Err(problem(format!(
                "`max_result_bytes` must be between 1 and {MAX_MESSAGE_BYTES}, got {max_result_bytes}"
            )));
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => Err(problem(
                "give either `command` (stdio) or `url` (HTTP), not both".into(),
            )),
            (None, None) => Err(problem("give `command` (stdio) or `url` (HTTP)".into())),
            (Some(command), None) => {
                if !self.headers.is_empty() || self.bearer_token_env_var.is_some() {
                    return Err(problem(
                        "`headers` and `bearer_token_env_var` apply to `url` servers only".into(),
                    ));
                }
                let environment = self
                    .child_environment(
                        |name| std::env::var_os(name),
                        std::env::vars_os().map(|(name, _)| name),
                    )
                    .map_err(problem)?;
                Ok(Transport::Stdio {
                    command: command.clone(),
                    environment,
                })
            }
            (None, Some(url)) => {
                if !self.args.is_empty()
                    || !self.env.is_empty()
                    || !self.env_vars.is_empty()
                    || self.cwd.is_some()
                {
                    return Err(problem(
                        "`args`, `env`, `env_vars` and `cwd` apply to `command` servers only"
                            .into(),
                    ));
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(problem(format!(
                        "`url` must start with http:// or https://, got `{url}`"
                    )));
                }
                let mut headers = HashMap::new();
                for (name, value) in &self.headers {
                    let name = http::HeaderName::try_from(name.as_str())
                        .map_err(|_| problem(format!("invalid HTTP header name `{name}`")))?;
                    let value = http::HeaderValue::try_from(value.as_str())
                        .map_err(|_| problem(format!("invalid value for HTTP header `{name}`")))?;
                    headers.insert(name, value);
                }
                let bearer = match &self.bearer_token_env_var {
                    Some(variable) => Some(std::env::var(variable).map_err(|_| {
                        problem(format!(
                            "environment variable `{variable}` (bearer_token_env_var) is not set"
                        ))
                    })?),
                    None => None,
                };
                Ok(Transport::Http {
                    url: url.clone(),
                    headers,
                    bearer,
                })
            }
        }
    }
}

/// Why a server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP server `{server}`: {problem}")]
    Config { server: String, problem: String },
    #[error("MCP server `{server}`: could not start `{command}`: {source}")]
    Spawn {
        server: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("MCP server `{server}`: the MCP handshake failed: {message}{stderr}")]
    Handshake {
        server: String,
        message: String,
        stderr: String,
    },
    #[error("MCP server `{server}`: no answer within {seconds} s while {doing}{stderr}")]
    Timeout {
        server: String,
        seconds: u64,
        doing: &'static str,
        stderr: String,
    },
    #[error("MCP server `{server}`: listing its tools failed: {message}")]
    ListTools { server: String, message: String },
}

enum Transport {
    Stdio {
        command: String,
        environment: Vec<(OsString, OsString)>,
    },
    Http {
        url: String,
        headers: HashMap<http::HeaderName, http::HeaderValue>,
        bearer: Option<String>,
    },
}

type Client = RunningService<RoleClient, ClientConfig>;

/// A tool as the server listed it.
#[derive(Clone, Debug)]
pub struct McpTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// A connected MCP server and the tools it offers.
pub struct McpServer {
    config: McpServerConfig,
    tools: Vec<McpTool>,
    client: tokio::sync::Mutex<Option<Client>>,
    stderr_tail: Arc<StdMutex<VecDeque<String>>>,
    stderr_reader: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set by [`McpServer::shutdown`]: no restart after that.
    shut_down: AtomicBool,
    /// Set when the running stdio server sent a message over [`MAX_MESSAGE_BYTES`] (which
    /// stopped it); cleared when it is started again.
    oversized: Arc<AtomicBool>,
}

impl McpServer {
    /// Start (or reach) the server, complete the MCP handshake and list its tools.
    pub async fn connect(config: McpServerConfig) -> Result<Arc<Self>, McpError> {
        let mut server = Self {
            config,
            tools: Vec::new(),
            client: tokio::sync::Mutex::new(None),
            stderr_tail: Arc::default(),
            stderr_reader: StdMutex::new(None),
            shut_down: AtomicBool::new(false),
            oversized: Arc::default(),
        };
        let client = server.start().await?;
        let timeout = server.config.startup_timeout();
        let listed = tokio::time::timeout(timeout, client.peer().list_all_tools())
            .await
            .map_err(|_| McpError::Timeout {
                server: server.config.name.clone(),
                seconds: timeout.as_secs(),
                doing: "listing its tools",
                stderr: server.stderr_report(),
            })?
            .map_err(|error| McpError::ListTools {
                server: server.config.name.clone(),
                message: root_cause(&error),
            })?;
        server.tools = listed
            .into_iter()
            .map(|tool| McpTool {
                name: tool.name.to_string(),
                description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*tool.input_schema).clone()),
            })
            .collect();
        tracing::info!(server = %server.config.name, tools = server.tools.len(), "MCP server connected");
        *server.client.get_mut() = Some(client);
        Ok(Arc::new(server))
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// The tools listed when the server was connected.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// Close the connection (a stdio server is asked to exit, then killed).
    pub async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        if let Some(mut client) = self.client.lock().await.take() {
            let _ = client.close_with_timeout(Duration::from_secs(5)).await;
        }
    }

    async fn start(&self) -> Result<Client, McpError> {
        let name = &self.config.name;
        let transport = self.config.transport()?;
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("ossa", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
        let timeout = self.config.startup_timeout();
        let handshake = async {
            match transport {
                Transport::Stdio {
                    command,
                    environment,
                } => {
                    let mut process = tokio::process::Command::new(&command);
                    process
                        .args(&self.config.args)
                        .env_clear()
                        .envs(environment)
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .kill_on_drop(true);
                    if let Some(cwd) = &self.config.cwd {
                        process.current_dir(cwd);
                    }
                    // Its own process group: a Ctrl-C meant for the current turn must not reach
                    // the server (the terminal signals the whole foreground group), and stopping
                    // the server stops what it started (`npx` runs `node`).
                    #[cfg(unix)]
                    process.process_group(0);
                    let spawn_error = |source| McpError::Spawn {
                        server: name.clone(),
                        command: command.clone(),
                        source,
                    };
                    let mut child = process.spawn().map_err(spawn_error)?;
                    if let Some(stderr) = child.stderr.take() {
                        self.collect_stderr(stderr);
                    }
                    self.oversized.store(false, Ordering::SeqCst);
                    let transport =
                        StdioChild::new(child, Arc::clone(&self.oversized)).map_err(spawn_error)?;
                    info.serve(transport)
                        .await
                        .map_err(|error| handshake_failure(&error))
                }
                Transport::Http {
                    url,
                    headers,
                    bearer,
                } => {
                    // reqwest is built without a default crypto provider (see the browser's fetcher).
                    crate::browser::fetch::install_tls_provider();
                    let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                        .custom_headers(headers);
                    config.max_json_response_size = MAX_MESSAGE_BYTES;
                    config.max_sse_event_size = MAX_MESSAGE_BYTES;
                    if let Some(token) = bearer {
                        config = config.auth_header(token);
                    }
                    let transport = StreamableHttpClientTransport::from_config(config);
                    info.serve(transport)
                        .await
                        .map_err(|error| format!("{url}: {}", handshake_failure(&error)))
                }
            }
            .map_err(|message| McpError::Handshake {
                server: name.clone(),
                message,
                stderr: self.stderr_report(),
            })
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(McpError::Timeout {
                server: name.clone(),
                seconds: timeout.as_secs(),
                doing: "starting",
                stderr: self.stderr_report(),
            }),
        }
    }

    /// Forward the server's stderr to the log and keep its last lines for crash reports.
    fn collect_stderr(&self, stderr: tokio::process::ChildStderr) {
        let tail = Arc::clone(&self.stderr_tail);
        let server = self.config.name.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(server = %server, "{line}");
                let line: String = line.chars().take(STDERR_LINE_MAX_CHARS).collect();
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        if let Ok(mut slot) = self.stderr_reader.lock() {
            *slot = Some(reader);
        }
    }

    /// Wait (briefly) until a stopped server's stderr has been read to the end.
    async fn drain_stderr(&self) {
        let reader = self
            .stderr_reader
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(reader) = reader {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
    }

    /// The server's last stderr lines, as a suffix for error messages (empty when none).
    fn stderr_report(&self) -> String {
        let Ok(tail) = self.stderr_tail.lock() else {
            return String::new();
        };
        if tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("\nLast lines on its stderr:\n{}", lines.join("\n"))
    }

    /// Call `tool` with `arguments`; what the model reads, or why it failed.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<String, FunctionError> {
        let server = &self.config.name;
        let peer = {
            let mut client = self.client.lock().await;
            if self.shut_down.load(Ordering::SeqCst) {
                return Err(FunctionError::Failed(format!(
                    "MCP server `{server}` has been shut down"
                )));
            }
            let alive = client
                .as_ref()
                .is_some_and(|c| !c.is_closed() && !c.peer().is_transport_closed());
            if !alive {
                if let Some(mut dead) = client.take() {
                    let _ = dead.close_with_timeout(Duration::from_secs(1)).await;
                }
                tracing::info!(server = %server, "MCP server is not running; starting it again");
                if let Ok(mut tail) = self.stderr_tail.lock() {
                    tail.clear();
                }
                let started = self.start().await.map_err(|error| {
                    FunctionError::Failed(format!(
                        "the MCP server is not running and could not be restarted: {error}"
                    ))
                })?;
                *client = Some(started);
            }
            match client.as_ref() {
                Some(client) => client.peer().clone(),
                None => {
                    return Err(FunctionError::Failed(format!(
                        "MCP server `{server}` is not running"
                    )));
                }
            }
        };
        let limit = self.config.max_result_bytes();
        self.call_tool_uncapped(tool, arguments, peer)
            .await
            .map(|text| cap_result(text, limit))
            .map_err(|error| match error {
                FunctionError::Failed(text) => FunctionError::Failed(cap_result(text, limit)),
                other => other,
            })
    }

    async fn call_tool_uncapped(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        peer: rmcp::Peer<RoleClient>,
    ) -> Result<String, FunctionError> {
        let server = &self.config.name;
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let timeout = self.config.call_timeout();
        let result = match tokio::time::timeout(timeout, peer.call_tool(params)).await {
            Ok(result) => result,
            Err(_) => {
                return Err(FunctionError::Failed(format!(
                    "`{tool}` on MCP server `{server}` did not answer within {} s",
                    timeout.as_secs()
                )));
            }
        };
        match result {
            Ok(result) => {
                let value = serde_json::to_value(&result).map_err(|error| {
                    FunctionError::Failed(format!(
                        "MCP server `{server}` sent a result that cannot be read: {error}"
                    ))
                })?;
                call_result_text(&value)
            }
            Err(ServiceError::McpError(error)) => {
                let mut message =
                    format!("MCP server `{server}` rejected the call: {}", error.message);
                if let Some(data) = error.data {
                    message.push_str(&format!(" ({data})"));
                }
                Err(FunctionError::Failed(message))
            }
            Err(error) => {
                let stopped = peer.is_transport_closed()
                    || matches!(
                        error,
                        ServiceError::TransportClosed | ServiceError::TransportSend(_)
                    );
                let cause = root_cause(&error);
                let message = match (&self.config.url, stopped) {
                    (None, true) if self.oversized.load(Ordering::SeqCst) => format!(
                        "MCP server `{server}` sent a message larger than {} MiB while running `{tool}` (the most ossa reads), so it was stopped; it will be started again on the next call",
                        MAX_MESSAGE_BYTES >> 20
                    ),
                    // rmcp does not say why an HTTP connection ended; these are the two ways.
                    (Some(url), true) => format!(
                        "MCP server `{server}` at {url} failed while running `{tool}` ({cause}: the server went away, or sent a message over {} MiB, the most ossa reads); it is reconnected on the next call",
                        MAX_MESSAGE_BYTES >> 20
                    ),
                    (None, true) => {
                        self.drain_stderr().await;
                        format!(
                            "MCP server `{server}` stopped while running `{tool}` ({cause}); it will be started again on the next call{}",
                            self.stderr_report()
                        )
                    }
                    (_, false) => {
                        format!("calling `{tool}` on MCP server `{server}` failed: {cause}")
                    }
                };
                Err(FunctionError::Failed(message))
            }
        }
    }
}

/// A stdio server: its process, and MCP over its stdin and stdout (read through [`CappedLines`]).
struct StdioChild {
    child: Child,
    io: AsyncRwTransport<RoleClient, CappedLines<ChildStdout>, ChildStdin>,
    oversized: Arc<AtomicBool>,
}

impl StdioChild {
    /// How long a stopping server gets after its stdin is closed, then again after `SIGTERM`.
    const EXIT_GRACE: Duration = Duration::from_secs(3);

    fn new(mut child: Child, oversized: Arc<AtomicBool>) -> io::Result<Self> {
        let missing = |what: &str| io::Error::other(format!("the server's {what} is not a pipe"));
        let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
        let stdout = CappedLines {
            inner: stdout,
            line: 0,
            limit: MAX_MESSAGE_BYTES,
            oversized: Arc::clone(&oversized),
        };
        // rmcp's own line limit stays as a second guard; ours (one byte less) fails first.
        let io =
            AsyncRwTransport::new_client(stdout, stdin).with_max_line_length(MAX_MESSAGE_BYTES + 1);
        Ok(Self {
            child,
            io,
            oversized,
        })
    }

    /// The MCP specification's stdio shutdown: close stdin and wait, then `SIGTERM` and wait,
    /// then `SIGKILL` (to the server's process group). A server that sent an oversized message
    /// is killed at once: it may be blocked writing the rest of it.
    async fn stop(&mut self) -> io::Result<()> {
        self.io.close().await?;
        if !self.oversized.load(Ordering::SeqCst)
            && tokio::time::timeout(Self::EXIT_GRACE, self.child.wait())
                .await
                .is_ok()
        {
            return Ok(());
        }
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            // The child has not been waited for, so its pid (its process group's id, as it was
            // started with `process_group(0)`) is still its own.
            signal_group(pid, libc::SIGTERM);
            if tokio::time::timeout(Self::EXIT_GRACE, self.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            signal_group(pid, libc::SIGKILL);
        }
        self.child.kill().await
    }
}

/// Send `signal` to the process group `group`.
#[cfg(unix)]
fn signal_group(group: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(group) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let sent = unsafe { libc::kill(-group, signal) };
    if sent != 0 {
        tracing::debug!(group, signal, error = %io::Error::last_os_error(), "signalling an MCP server failed");
    }
}

impl RmcpTransport<RoleClient> for StdioChild {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.io.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.io.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.stop()
    }
}

/// A stdio server's stdout that fails once a line (one JSON-RPC message) grows past `limit`
/// bytes. rmcp would skip such a line and wait on, leaving the call to time out; failing the
/// read closes the connection instead, so the call is answered at once (see `oversized`).
struct CappedLines<R> {
    inner: R,
    /// Bytes of the current line read so far.
    line: usize,
    limit: usize,
    oversized: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CappedLines<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let mut segments = buf.filled()[before..].split(|byte| *byte == b'\n');
        let mut longest = this.line + segments.next().map_or(0, <[u8]>::len);
        let mut current = longest;
        for segment in segments {
            current = segment.len();
            longest = longest.max(current);
        }
        this.line = current;
        if longest > this.limit {
            this.oversized.store(true, Ordering::SeqCst);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server sent a message of more than {} bytes",
                    this.limit
                ),
            )));
        }
        Poll::Ready(Ok(()))
    }
}

/// `text` cut to at most `limit` bytes (at a character boundary), with a note saying how much
/// was cut.
fn cap_result(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!(
        "\n[result truncated: the first {end} of its {total} bytes are shown, {} bytes were cut]",
        total - end
    ));
    text
}

/// Why the MCP handshake failed, without rmcp's Rust type names.
fn handshake_failure(error: &ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            format!("{} ({context})", root_cause(error))
        }
        ClientInitializeError::JsonRpcError(error) => {
            format!(
                "the server answered `initialize` with an error: {}",
                error.message
            )
        }
        other => other.to_string(),
    }
}

/// The most specific message in an error's source chain (rmcp's outer messages name Rust types).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    let mut deepest = error;
    loop {
        // rmcp wraps the HTTP client's error without declaring it as the source.
        if let Some(StreamableHttpError::Client(inner)) =
            deepest.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            deepest = inner;
            continue;
        }
        match deepest.source() {
            Some(source) => deepest = source,
            None => return deepest.to_string(),
        }
    }
}

/// The text of an MCP `CallToolResult` (in its JSON wire shape) for the model.
///
/// Text blocks are joined by newlines; embedded text resources contribute their text; images,
/// audio and binary resources are named, not inlined (gpt-oss reads text only); a result with no
/// content but `structuredContent` is that JSON. `isError` results become errors.
pub fn call_result_text(result: &Value) -> Result<String, FunctionError> {
    let mut parts = Vec::new();
    for block in result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default();
        match text("type") {
            "text" => parts.push(text("text").to_string()),
            "image" | "audio" => {
                parts.push(format!("[{} omitted: {}]", text("type"), text("mimeType")))
            }
            "resource" => {
                let resource = block.get("resource").cloned().unwrap_or_default();
                let field = |key: &str| {
                    resource
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                if let Some(body) = resource.get("text").and_then(Value::as_str) {
                    parts.push(body.to_string());
                } else {
                    parts.push(format!(
                        "[binary resource {} ({})]",
                        field("uri"),
                        field("mimeType")
                    ));
                }
            }
            "resource_link" => {
                let mut link = format!("[resource {}: {}]", text("name"), text("uri"));
                if !text("description").is_empty() {
                    link.push_str(&format!(" {}", text("description")));
                }
                parts.push(link);
            }
            other => parts.push(format!("[{other} content omitted]")),
        }
    }
    let mut text = parts.join("\n");
    if text.is_empty()
        && let Some(structured) = result.get("structuredContent")
    {
        text = structured.to_string();
    }
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        if text.is_empty() {
            text = "the tool reported an error without a message".into();
        }
        return Err(FunctionError::Failed(text));
    }
    Ok(text)
}

/// One tool of an MCP server as a function.
pub struct McpFunction {
    server: Arc<McpServer>,
    tool: String,
    description: ToolDescription,
    arguments: ArgumentSchema,
}

impl McpFunction {
    /// `tool` of `server`, exposed to the model as `name`; with the reason its schema is shown
    /// to the model only in part, if it is.
    fn new(server: Arc<McpServer>, tool: &McpTool, name: String) -> (Self, Option<SchemaTooLarge>) {
        let (parameters, too_large) = match prompt_schema(&tool.input_schema) {
            Ok(parameters) => (parameters, None),
            Err(error) => (error.shown().clone(), Some(error)),
        };
        let description = ToolDescription::new(name, tool.description.clone(), Some(parameters));
        let function = Self {
            server,
            tool: tool.name.clone(),
            description,
            arguments: ArgumentSchema::new(tool.input_schema.clone()),
        };
        (function, too_large)
    }

    /// The server's own name for the tool.
    pub fn tool_name(&self) -> &str {
        &self.tool
    }

    pub fn server(&self) -> &McpServer {
        &self.server
    }
}

#[async_trait]
impl Function for McpFunction {
    fn description(&self) -> &ToolDescription {
        &self.description
    }

    async fn call(&self, arguments: &str) -> Result<String, FunctionError> {
        let arguments = match self.arguments.parse(arguments)? {
            Value::Object(arguments) => arguments,
            other => {
                return Err(FunctionError::InvalidArguments(vec![format!(
                    "the arguments must be a JSON object, got {other}"
                )]));
            }
        };
        self.server.call_tool(&self.tool, arguments).await
    }
}

/// Start every configured server (concurrently). Servers that fail are reported, not fatal:
/// the others are still usable.
pub async fn connect_all(configs: &[McpServerConfig]) -> (Vec<Arc<McpServer>>, Vec<McpError>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, config) in configs.iter().cloned().enumerate() {
        tasks.spawn(async move { (index, McpServer::connect(config).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "MCP connect task failed"),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    let mut servers = Vec::new();
    let mut errors = Vec::new();
    for (_, result) in results {
        match result {
            Ok(server) => servers.push(server),
            Err(error) => errors.push(error),
        }
    }
    (servers, errors)
}

/// How an MCP tool is exposed to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposedTool {
    pub server: String,
    /// The server's name for the tool.
    pub tool: String,
    /// The model calls `functions.{function}`.
    pub function: String,
}

/// Add the tools of `servers` to `functions`, naming them as the module documentation says.
/// Returns what was added, in order, and the warnings (also logged): a tool that could not be
/// given a free valid name is left out; a tool whose schema expands past the budget is shown to
/// the model only as deep as it fits (see [`prompt_schema`]).
pub fn add_tools(
    functions: &mut FunctionTools,
    servers: &[Arc<McpServer>],
) -> (Vec<ExposedTool>, Vec<String>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for server in servers {
        for tool in server.tools() {
            *counts.entry(sanitize(&tool.name)).or_insert(0) += 1;
        }
    }
    let mut added = Vec::new();
    let mut warnings = Vec::new();
    let mut warn = |server: &McpServer, tool: &str, what: String| {
        let warning = format!("MCP server `{}`: tool `{tool}`{what}", server.name());
        tracing::warn!("{warning}");
        warnings.push(warning);
    };
    for server in servers {
        for tool in server.tools() {
            let plain = sanitize(&tool.name);
            let collides = counts.get(&plain).is_some_and(|n| *n > 1) || functions.contains(&plain);
            let name = if collides {
                sanitize(&format!("{}__{}", server.name(), tool.name))
            } else {
                plain
            };
            if !is_valid_function_name(&name) || functions.contains(&name) {
                warn(
                    server,
                    &tool.name,
                    format!(" left out: no free valid function name (tried `{name}`)"),
                );
                continue;
            }
            let (function, too_large) = McpFunction::new(Arc::clone(server), tool, name.clone());
            match functions.add(function) {
                Ok(_) => {
                    if let Some(too_large) = too_large {
                        warn(server, &tool.name, format!(": {too_large}"));
                    }
                    added.push(ExposedTool {
                        server: server.name().to_string(),
                        tool: tool.name.clone(),
                        function: name,
                    })
                }
                Err(error) => warn(server, &tool.name, format!(" left out: {error}")),
            }
        }
    }
    (added, warnings)
}

/// A function name from an MCP tool name: disallowed characters become `_`, a leading digit or
/// `-` gets a `_` in front.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset keys stay out of the serialized config (no `null`s, no empty lists or tables).
    #[test]
    fn serializes_only_the_keys_that_are_set() {
        let bare = McpServerConfig {
            name: "bare".into(),
            ..McpServerConfig::default()
        };
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"name":"bare"}"#);
        let full = McpServerConfig {
            name: "full".into(),
            command: Some("npx".into()),
            args: vec!["-y".into()],
            env: BTreeMap::from([("LOG_LEVEL".into(), "warn".into())]),
            env_vars: vec!["GITHUB_TOKEN".into()],
            cwd: Some("/srv".into()),
            url: Some("http://127.0.0.1:8000/mcp".into()),
            headers: BTreeMap::from([("X-Team".into(), "core".into())]),
            bearer_token_env_var: Some("TRACKER_TOKEN".into()),
            startup_timeout_secs: Some(30),
            call_timeout_secs: Some(120),
            max_result_bytes: Some(1000),
        };
        assert_eq!(
            serde_json::to_string(&full).unwrap(),
            r#"{"name":"full","command":"npx","args":["-y"],"env":{"LOG_LEVEL":"warn"},"env_vars":["GITHUB_TOKEN"],"cwd":"/srv","url":"http://127.0.0.1:8000/mcp","headers":{"X-Team":"core"},"bearer_token_env_var":"TRACKER_TOKEN","startup_timeout_secs":30,"call_timeout_secs":120,"max_result_bytes":1000}"#
        );
    }

    #[test]
    fn sanitize_replaces_what_a_recipient_cannot_hold() {
        assert_eq!(sanitize("files.read"), "files_read");
        assert_eq!(sanitize("3d-print"), "_3d-print");
        assert_eq!(sanitize("ok_name-1"), "ok_name-1");
        assert_eq!(sanitize("é"), "_");
    }
}
