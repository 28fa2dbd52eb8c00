//! `tbgw`: runs the ThingsBoard gateway from an upstream-format config directory.
//!
//! * `tbgw run --config /etc/thingsboard-gateway/config/tb_gateway.json`
//! * `tbgw check --config tb_gateway.json`: validates without connecting; exit 1 and one
//!   `file: key.path: reason` line per problem.
//! * `tbgw demo`: a self-contained demo (in-process broker standing in for ThingsBoard,
//!   simulated devices, the gateway between them).

mod demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tbgw::config;
use tbgw::service::remote_log::{remote_logging, RemoteLogHandle};
use tbgw::Gateway;

#[derive(Parser, Debug)]
#[command(
    name = "tbgw",
    version,
    about = "A fast, small ThingsBoard IoT gateway"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    Run {
        /// The main configuration file (`tb_gateway.json` or `tb_gateway.yaml`).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate the configuration and every connector file without connecting.
    Check {
        /// The main configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run a self-contained demo: an in-process broker stands in for ThingsBoard, simulated
    /// devices publish to it, the gateway forwards, and what ThingsBoard receives is printed.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
    },
}

/// Logs to stderr, and to ThingsBoard when it sets `RemoteLoggingLevel` (the returned handle).
fn init_logging(level: &str) -> RemoteLogHandle {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (remote, handle) = remote_logging();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(remote)
        .try_init();
    handle
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    let remote_log = init_logging(cli.log_level.as_deref().unwrap_or(default_level));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tbgw: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config, remote_log).await,
            Command::Check { config } => check(&config),
            Command::Demo { duration } => match demo::run(duration).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tbgw demo: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

/// Every connector factory compiled into this binary: the standard connectors of
/// `tbgw-connectors`, and the example `line` connector with the `example-line` feature.
fn factories() -> Vec<Box<dyn tbgw::connector::ConnectorFactory>> {
    #[allow(unused_mut)]
    let mut v = tbgw_connectors::factories();
    #[cfg(feature = "example-line")]
    v.push(Box::new(tbgw_example_line::LineFactory));
    v
}

fn print_errors(errors: &tbgw::config::ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

fn check(path: &Path) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_errors(&e);
            // A broken main file must not hide broken connector files: report theirs too
            // (each problem once).
            let mut seen: std::collections::HashSet<String> =
                e.0.iter().map(ToString::to_string).collect();
            for e in config::check_connector_files(path, &factories()) {
                if seen.insert(e.to_string()) {
                    eprintln!("{e}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    let connectors = loaded.connectors.len();
    match Gateway::builder()
        .factories(factories())
        .config(loaded)
        .check()
    {
        Ok(ignored) => {
            for ig in ignored {
                eprintln!("warning: {ig}");
            }
            println!("{}: OK ({connectors} connector(s))", path.display());
            ExitCode::SUCCESS
        }
        Err(tbgw::GatewayError::Config(e)) => {
            print_errors(&e);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path, remote_log: RemoteLogHandle) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::builder()
        .factories(factories())
        .config(loaded)
        .remote_logging(remote_log)
        .build()
    {
        Ok(g) => g,
        Err(tbgw::GatewayError::Config(e)) => {
            print_errors(&e);
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "tbgw starting.");
    let report = gateway.run(shutdown_signal()).await;
    if report.restart_requested {
        restart_self();
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `gateway_restart`: replaces this process with a fresh copy of itself, same arguments.
/// Returns only if that fails (the caller then exits and a service manager may restart it).
fn restart_self() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let exe = std::env::current_exe()
            .ok()
            .or_else(|| args.next().map(PathBuf::from));
        let rest: Vec<_> = std::env::args_os().skip(1).collect();
        if let Some(exe) = exe {
            tracing::warn!(exe = %exe.display(), "Restarting.");
            let e = std::process::Command::new(&exe).args(rest).exec();
            eprintln!("tbgw: restart failed: {e}");
        }
    }
}

pub(crate) use tbgw::signal::shutdown_signal;
