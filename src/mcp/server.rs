//! Starting or reaching one MCP server and completing the protocol's handshake.

use std::process::Stdio;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::io::AsyncBufReadExt;

use super::config::{ServerConfig, Transport};
use super::http::TracedHttp;
use super::{Handler, McpError, Session};

/// A session with the server of `config`, handshake done.
pub(super) async fn connect(config: &ServerConfig, handler: Handler) -> Result<Session, McpError> {
    match &config.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut process = tokio::process::Command::new(command);
            process.args(args).env_clear();
            // Only what the file gives, plus PATH to find what it runs.
            if let Some(path) = std::env::var_os("PATH") {
                process.env("PATH", path);
            }
            process.envs(env);
            if let Some(cwd) = cwd {
                process.current_dir(cwd);
            }
            // A group of its own: killing the session kills what it started.
            process.process_group(0);
            let (transport, stderr) = TokioChildProcess::builder(process)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| McpError(format!("`{command}` could not be started: {e}")))?;
            let process_group = transport.id().map(|pid| pid as i32);
            if let Some(stderr) = stderr {
                let name = config.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::info!(mcp_server = %name, "{line}");
                    }
                });
            }
            let service = handler.serve(transport).await.map_err(|e| {
                McpError(format!(
                    "it did not complete the MCP handshake (did `{command}` exit?): {e}"
                ))
            })?;
            Ok(Session {
                service,
                process_group,
            })
        }
        Transport::Http { url, headers } => {
            let mut custom = std::collections::HashMap::new();
            for (name, value) in headers {
                // Checked when the file was read.
                if let (Ok(name), Ok(value)) = (
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                    reqwest::header::HeaderValue::from_str(value),
                ) {
                    custom.insert(name, value);
                }
            }
            let client = reqwest::Client::builder()
                .connect_timeout(config.timeout)
                .build()
                .map_err(|e| McpError(format!("no HTTP client: {e}")))?;
            let transport = StreamableHttpClientTransport::with_client(
                TracedHttp(client),
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom),
            );
            let service = handler
                .serve(transport)
                .await
                .map_err(|e| McpError(format!("{url} did not complete the MCP handshake: {e}")))?;
            Ok(Session {
                service,
                process_group: None,
            })
        }
    }
}
