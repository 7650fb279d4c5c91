//! `meshgate`: the API gateway binary.
//!
//! Exit codes: 0 success, 1 runtime failure (e.g. a port in use), 2 bad config or usage.

mod demo;

use clap::{Parser, Subcommand, ValueEnum};
use meshgate_proxy::Gateway;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// API gateway and service-mesh proxy.
#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "meshgate: API gateway and service-mesh proxy",
    after_help = "Exit codes: 0 ok, 1 runtime failure (e.g. a port in use), 2 bad config or usage.\nLogs go to stderr; RUST_LOG sets the level (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway on a config file. Reloads it on change and on SIGHUP (a bad new config is
    /// refused and the running one kept); drains requests in flight on SIGTERM or Ctrl-C.
    Run {
        /// The YAML config file.
        #[arg(short, long, env = "MESHGATE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file without starting anything: syntax, references, certificates, plugin
    /// settings. Prints every error with file, line and field, and warns about routes that can
    /// never match. Exit code 0 when valid, 2 when not.
    Validate {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Print an argon2id hash of a password read from standard input (its first line), for a
    /// consumer's `basic-auth` credential (`password_hash:`). The password is never echoed.
    HashPassword,
    /// Start small sample upstream services on 127.0.0.1:9101-9105 and the gateway on
    /// `examples/gateway.yaml` (listening on 127.0.0.1:8080), to try meshgate with curl.
    Demo {
        /// The gateway config to run the demo with.
        #[arg(short, long, default_value = "examples/gateway.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Validate { file } => validate(&file),
        Command::HashPassword => hash_password(),
        Command::Demo { config } => match demo::start_upstreams() {
            Ok(()) => run(&config),
            Err(e) => {
                eprintln!("meshgate demo: cannot start the sample upstreams: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("meshgate hash-password: cannot read standard input: {e}");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("meshgate hash-password: give the password on standard input, e.g. `meshgate hash-password < file`");
        return ExitCode::from(2);
    }
    println!("{}", meshgate_plugins::auth::basic_auth::hash_password(password));
    ExitCode::SUCCESS
}

fn validate(file: &Path) -> ExitCode {
    let doc = match meshgate_config::load_file(file) {
        Ok(doc) => doc,
        Err(errors) => return config_errors(&errors),
    };
    let targets = meshgate_balance::TargetRegistry::new();
    match meshgate_proxy::compile(&doc, &meshgate_plugins::builtin(), &targets) {
        Ok(snap) => {
            for w in snap.route_findings() {
                println!("warning: {}: {w}", file.display());
            }
            let c = &doc.config;
            println!(
                "{}: valid ({} listeners, {} services, {} upstreams, {} routes)",
                file.display(),
                c.listeners.len(),
                c.services.len(),
                c.upstreams.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => config_errors(&errors),
    }
}

fn config_errors(errors: &meshgate_config::ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

fn run(config: &Path) -> ExitCode {
    let doc = match meshgate_config::load_file(config) {
        Ok(doc) => doc,
        Err(errors) => return config_errors(&errors),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Handlers go in before the listeners open: a SIGHUP sent as soon as the port answers (a
    // deploy script's reload) must reload, not kill the process with the default action.
    let signals = match rt.block_on(async { Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let gateway = match Gateway::start_with(config, doc, meshgate_plugins::builtin()) {
        Ok(g) => Arc::new(g),
        Err(meshgate_proxy::StartError::Config(errors)) => return config_errors(&errors),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = gateway.watch() {
        tracing::warn!("config file watching is off: {e}");
    }
    rt.block_on(signals.wait(&gateway));
    tracing::info!("shutting down: draining requests in flight");
    gateway.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The signals `run` handles, registered before the gateway starts.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers; must run inside the runtime that will wait on them.
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
    async fn wait(mut self, gateway: &Gateway) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    gateway.reload_and_log();
                }
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
            }
        }
    }
}
