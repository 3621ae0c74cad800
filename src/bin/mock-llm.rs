//! The `mock-llm` binary: parses the command line, loads the fixtures and
//! runs the library's server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_server::mock_llm;

/// Where it listens when `--addr` is not given.
const DEFAULT_ADDR: &str = "127.0.0.1:4010";

/// Printed for `--help` and after a bad argument.
const USAGE: &str = "usage: mock-llm [--addr HOST:PORT] [--fixtures FILE_OR_DIR]\n\
    \n  --addr      where to listen (default 127.0.0.1:4010; port 0 picks a free port)\
    \n  --fixtures  a JSON file of rules, or a directory of them (default: the\
    \n              built-in demo of the agent network, see infra/mock-llm/README.md)";

/// The parsed command line.
struct Args {
    /// The listen address.
    addr: String,
    /// The fixtures to load; `None` uses the built-in ones.
    fixtures: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: DEFAULT_ADDR.to_string(),
        fixtures: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (word, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| words.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--fixtures" => args.fixtures = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-llm: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rules = match &args.fixtures {
        Some(path) => mock_llm::load(path),
        None => mock_llm::defaults(),
    };
    let rules = match rules {
        Ok(rules) => rules,
        Err(error) => {
            eprintln!("mock-llm: {error}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = agent_server::telemetry::init();
    let addr = args.addr.clone();
    let outcome = actix_rt::System::new().block_on(async move {
        let server = mock_llm::serve(&addr, rules).await?;
        println!("mock-llm listening on {}", server.url());
        server.wait().await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-llm: could not serve on {}: {error}", args.addr);
            ExitCode::FAILURE
        }
    }
}
