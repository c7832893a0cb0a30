//! The tools a conversation gets, built from the [`Config`]: the built-in `browser` and `python`
//! (when chosen), and in the `functions` namespace `apply_patch` (when a workspace is configured)
//! and the tools of the configured MCP servers.

use std::path::PathBuf;
use std::sync::Arc;

use ossa_sandbox::{Progress, Sandbox, SandboxError};
use ossa_tools::apply_patch::{self, ApplyPatch, PatchError};
use ossa_tools::mcp::{self, ExposedTool, McpServer};
use ossa_tools::{BrowserTool, FunctionTools, PythonTool, Tool};

/// Which built-in tools to build; defined with the settings that choose them.
pub use crate::config::ToolChoice;
use crate::config::{Config, ConfigError, process_env};

/// The tools built for a run, and what came with them.
pub struct Toolset {
    /// Every tool, ready for the agent: `browser`, `python`, then `functions` when it has any.
    pub tools: Vec<Arc<dyn Tool>>,
    /// The `functions` namespace alone (also in `tools` when not empty), for callers that add
    /// functions of their own.
    pub functions: FunctionTools,
    /// Text for the developer message that comes with the functions (how to use `apply_patch`).
    pub instructions: Vec<String>,
    /// The MCP servers that started; call [`McpServer::shutdown`] on each when done.
    pub mcp_servers: Vec<Arc<McpServer>>,
    /// The MCP tools offered, and the function names the model calls them by.
    pub mcp_tools: Vec<ExposedTool>,
    /// Problems that left something out without stopping the run (an MCP server that did not
    /// start, an MCP tool without a free name), for the user to see.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Toolset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolset")
            .field(
                "tools",
                &self.tools.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("functions", &self.functions.names())
            .field("mcp_tools", &self.mcp_tools)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Toolset {
    /// Closes the MCP servers (stdio servers are asked to exit, then killed).
    pub async fn shutdown(&self) {
        for server in &self.mcp_servers {
            server.shutdown().await;
        }
    }
}

/// Why the tools could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ToolsetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the browser: {0}")]
    Browser(#[from] ossa_tools::browser::BrowserConfigError),
    #[error("cannot start the Python sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("[tools] apply_patch_workspace: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: PatchError,
    },
}

/// Builds the chosen tools. The sandbox is opened here: on a machine's first use that fetches
/// its Python runtime with pip and compiles it (minutes), reported as `progress` says. MCP
/// servers are started concurrently; one that fails is a warning in [`Toolset::warnings`], not
/// an error, so the others stay usable.
pub async fn build_tools(
    config: &Config,
    choice: &ToolChoice,
    progress: Progress,
) -> Result<Toolset, ToolsetError> {
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    if choice.browser {
        let backend = config
            .search_config(&process_env)?
            .build(config.fetch_config())?;
        let browser = BrowserTool::new(backend, config.browser_config());
        tracing::info!(?browser, "browser tool ready");
        tools.push(Arc::new(browser));
    }
    if choice.python {
        let mut sandbox_config = config.sandbox_config()?;
        sandbox_config.runtime.progress = progress;
        let sandbox = Sandbox::open_async(sandbox_config).await?;
        tracing::info!(mount = ?config.python.mount, "python tool ready");
        tools.push(Arc::new(PythonTool::new(
            sandbox,
            config.python_session_options(),
        )));
    }

    let mut functions = FunctionTools::new();
    let mut instructions = Vec::new();
    if let Some(workspace) = &config.tools.apply_patch_workspace {
        let tool = ApplyPatch::new(workspace).map_err(|source| ToolsetError::Workspace {
            path: workspace.clone(),
            source,
        })?;
        // A fresh FunctionTools has no name to collide with.
        if let Err(error) = functions.add(tool) {
            tracing::error!(%error, "apply_patch could not be added");
        }
        instructions.push(apply_patch::INSTRUCTIONS.to_string());
    }

    let mut warnings = Vec::new();
    let (mcp_servers, mcp_tools) = if config.mcp_servers.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let (servers, errors) = mcp::connect_all(&config.mcp_servers).await;
        for error in errors {
            tracing::warn!(%error, "MCP server left out");
            warnings.push(error.to_string());
        }
        let (added, skipped) = mcp::add_tools(&mut functions, &servers);
        warnings.extend(skipped);
        (servers, added)
    };
    if !functions.is_empty() {
        tools.push(Arc::new(functions.clone()));
    }
    Ok(Toolset {
        tools,
        functions,
        instructions,
        mcp_servers,
        mcp_tools,
        warnings,
    })
}
