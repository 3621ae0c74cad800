//! The `agent-server` binary: parses the command and calls the library.

use std::process::ExitCode;

use agent_server::config::Settings;
use agent_server::startup::{self, Application};

const USAGE: &str = "usage: agent-server [serve | migrate | bench | token ...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().cloned().unwrap_or_else(|| "serve".into());
    if !matches!(command.as_str(), "serve" | "migrate" | "bench" | "token") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("agent-server: {error}");
            return ExitCode::from(2);
        }
    };
    if command == "token" {
        // No telemetry: stdout is the command's answer (a new token alone).
        let token_command = match agent_server::cli::parse_token_command(&args[1..]) {
            Ok(token_command) => token_command,
            Err(error) => {
                eprintln!(
                    "agent-server token: {error}\n{}",
                    agent_server::cli::TOKEN_USAGE
                );
                return ExitCode::from(2);
            }
        };
        let outcome =
            actix_rt::System::new().block_on(agent_server::cli::token(&settings, token_command));
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("agent-server token: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The bench measures what exporting telemetry costs. Without a collector
    // of the user's it exports to a sink of its own that discards everything.
    let mut sink = None;
    if command == "bench" && !agent_server::telemetry::otlp_endpoint_set("TRACES") {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((address, listener)) => {
                // SAFETY: no other thread exists yet to read the environment.
                unsafe {
                    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{address}"))
                };
                sink = Some(listener);
            }
            Err(error) => eprintln!("agent-server: no local OTLP sink for the bench: {error}"),
        }
    }
    let telemetry = agent_server::telemetry::init();
    let outcome = actix_rt::System::new().block_on(async {
        match command.as_str() {
            "migrate" => startup::migrate(&settings).await,
            "bench" => agent_server::bench::run(settings, &telemetry, sink).await,
            _ => {
                Application::build(settings)
                    .await?
                    .run_until_stopped()
                    .await
            }
        }
    });
    // Everything buffered leaves before the process does.
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}
