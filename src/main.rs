//! The `agent-server` binary: parses the command and calls the library.

use std::process::ExitCode;

use agent_server::config::Settings;
use agent_server::startup::{self, Application};

const USAGE: &str =
    "usage: agent-server [serve | migrate | bench | token ... | runs ... | --help | --version]";

/// `agent-server --help`: the commands, then the settings they read.
const HELP: &str = "\
agent-server: runs LLM agents durably on PostgreSQL and lets people watch and steer them.

commands:
  serve (the default)   start the server: the HTTP API, the dashboard at /, the run engine;
                        without DATABASE_URL it runs its own PostgreSQL under the data dir,
                        without an LLM key it uses the built-in scripted model
  migrate               apply the database migrations to DATABASE_URL and exit
  bench                 measure the engine and print each figure with its target
  token create --name NAME --role ROLE[,ROLE...] | token list | token revoke NAME
                        manage API tokens directly in the database (roles: viewer, operator,
                        approver, admin)
  runs list|show|approve|reject|cancel|message|pause|unpause|fork|tail ...
                        a client of a running server; `agent-server runs` alone explains it

settings (environment variables; invalid ones stop the server with one line naming them):
  AGENT_SERVER_ADDR              listen address (127.0.0.1:3200; port 0 picks a free one)
  AGENT_SERVER_DATA_DIR          embedded PostgreSQL, workspace, admin token (./.agent-server)
  DATABASE_URL                   an external PostgreSQL instead of the embedded one
  LLM_PROVIDER, LLM_MODEL, LLM_BASE_URL, ANTHROPIC_API_KEY, OPENAI_API_KEY
                                 the model (anthropic, openai or scripted)
  AGENT_WORKSPACE                the only directory tools may touch ({data dir}/workspace)
  AGENT_MAX_ITERATIONS           model answers per run (50)
  AGENT_APPROVAL_TIMEOUT_SECS    how long a dangerous call waits for a human (259200)
  AGENT_RUN_MAX_TOKENS, AGENT_RUN_MAX_COST_USD, AGENT_MODEL_PRICES
                                 default run budgets, and USD per million tokens by model
  AGENT_SERVER_AUTH, AGENT_SERVER_ADMIN_TOKEN, AGENT_REQUIRE_SECOND_APPROVER,
  AGENT_RATE_LIMIT_RUNS_PER_MIN, AGENT_MAX_OPEN_RUNS_PER_TOKEN, AGENT_SERVER_ALLOWED_HOSTS,
  AGENT_SERVER_ALLOWED_ORIGINS   access: tokens and roles, limits, hosts and browser origins
  AGENT_SANDBOX, AGENT_SHELL_NETWORK, AGENT_SHELL_MEMORY_MB
                                 the shell's sandbox (bubblewrap)
  AGENT_SERVER_INSTANCE_ID, AGENT_LEASE_SECS
                                 this instance among several on one database
  LOKI_URL, GRAFANA_URL, LOG_FORMAT, OTEL_*
                                 log queries, trace links, logs and OpenTelemetry export
  AGENT_SERVER_URL, AGENT_SERVER_TOKEN
                                 where `runs` finds the server, and its token

The README explains each in full.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().cloned().unwrap_or_else(|| "serve".into());
    // `--help` anywhere but in `runs` (whose own words may be anything)
    // asks for help, never starts a server.
    let asks_help = command != "runs" && args.iter().any(|a| a == "--help" || a == "-h");
    match command.as_str() {
        _ if asks_help => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        "--help" | "-h" | "help" => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        "--version" | "-V" | "version" => {
            println!("agent-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        "runs" => return runs(&args[1..]),
        "serve" | "migrate" | "bench" if args.len() > 1 => {
            eprintln!("agent-server {command}: unexpected `{}`\n{USAGE}", args[1]);
            return ExitCode::from(2);
        }
        "serve" | "migrate" | "bench" | "token" => {}
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
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

/// `agent-server runs …`: a client of a running server; it reads only its
/// own two settings, not the server's.
fn runs(args: &[String]) -> ExitCode {
    use agent_server::client;
    let command = match client::parse_runs_command(args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("agent-server runs: {error}\n{}", client::RUNS_USAGE);
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    let client = match client::Client::from_lookup(|name| std::env::var(name).ok()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("agent-server runs: {error:#}");
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    let outcome = actix_rt::System::new().block_on(client::runs(&client, command));
    match outcome {
        Ok(()) => ExitCode::from(client::EXIT_OK),
        Err(error) => {
            eprintln!("agent-server runs: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
