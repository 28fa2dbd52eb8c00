//! `tbgw`: runs the ThingsBoard gateway from an upstream-format config directory.
//!
//! * `tbgw run --config /etc/thingsboard-gateway/config/tb_gateway.json`
//! * `tbgw check --config tb_gateway.json`: validates without connecting; exit 1 and one
//!   `file: key.path: reason` line per problem.
//! * `tbgw status`: what the running gateway is doing (over its local status socket).
//! * `tbgw demo`: a self-contained demo (in-process broker standing in for ThingsBoard,
//!   simulated devices, the gateway between them).

mod demo;
mod grpc;
mod logs;
mod status;
#[cfg(unix)]
mod systemd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tbgw::config;
use tbgw::service::remote_log::RemoteLogHandle;
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
    /// Log records as text lines or as JSON objects (one per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM; SIGHUP applies changed connector files.
    Run {
        /// The main configuration file (`tb_gateway.json` or `tb_gateway.yaml`).
        #[arg(short, long)]
        config: PathBuf,
        /// The status socket `tbgw status` reads (default: /run/tbgw/status.sock when
        /// /run/tbgw exists, else tbgw-status.sock beside the configuration; `none`: off).
        #[arg(long, env = "TBGW_STATUS_SOCKET")]
        status_socket: Option<PathBuf>,
    },
    /// Show what the running gateway is doing: ThingsBoard connection, storage, connectors,
    /// devices, rates, errors.
    Status {
        /// The main configuration file the gateway runs with (to find its status socket).
        #[arg(
            short,
            long,
            default_value = "/etc/thingsboard-gateway/config/tb_gateway.json"
        )]
        config: PathBuf,
        /// The status socket (as given to `tbgw run`).
        #[arg(long, env = "TBGW_STATUS_SOCKET")]
        status_socket: Option<PathBuf>,
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
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

/// `logs.json` beside the main configuration file, if there is one.
fn logs_json(config: &Path) -> Option<PathBuf> {
    let p = config.parent().unwrap_or(Path::new("")).join("logs.json");
    p.is_file().then_some(p)
}

/// Logs as `logs.json` says (else to stderr), and to ThingsBoard when it sets
/// `RemoteLoggingLevel` (the returned handle).
fn init_logging(
    cli: &Cli,
    default_level: &str,
    last_errors: status::LastErrors,
) -> RemoteLogHandle {
    let config = match &cli.command {
        Command::Run { config, .. } => Some(config),
        _ => None,
    };
    let mut problems = Vec::new();
    let logs = config.and_then(|c| logs_json(c)).and_then(|p| {
        match logs::LogsConfig::load(&p) {
            Ok(l) => Some(l),
            Err(e) => {
                // As upstream: a broken logs.json does not stop the gateway; it logs to stderr.
                problems = e;
                None
            }
        }
    });
    let override_filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| cli.log_level.clone());
    let (handle, errors) = logs::init(
        logs.as_ref(),
        override_filter.as_deref(),
        default_level,
        cli.log_format,
        last_errors,
    );
    for p in problems {
        tracing::error!("{p}; logging to stderr instead.");
    }
    for e in errors {
        tracing::error!("logs.json: {e}");
    }
    handle
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    let last_errors = status::LastErrors::default();
    let remote_log = init_logging(&cli, default_level, last_errors.clone());
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
            Command::Run {
                config,
                status_socket,
            } => {
                let socket = match status_socket {
                    Some(p) if p.as_os_str() == "none" => None,
                    Some(p) => Some(p),
                    None => Some(status::default_socket(&config)),
                };
                run(&config, remote_log, socket, last_errors).await
            }
            Command::Status {
                config,
                status_socket,
                json,
            } => {
                let socket = status_socket.unwrap_or_else(|| status::default_socket(&config));
                match status::query(&socket, json).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("tbgw status: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
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
/// `tbgw-connectors`, `type: grpc` (feature `grpc`), and the example `line` connector with the
/// `example-line` feature.
fn factories(grpc: &grpc::Grpc) -> Vec<Box<dyn tbgw::connector::ConnectorFactory>> {
    #[allow(unused_mut)]
    let mut v = tbgw_connectors::factories();
    v.extend(grpc.factories());
    #[cfg(feature = "example-line")]
    v.push(Box::new(tbgw_example_line::LineFactory));
    v
}

fn print_errors(errors: &tbgw::config::ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

/// Prints the problems (errors) and what is not honoured (warnings) in `logs.json` beside
/// `path`; false if it has errors.
fn check_logs_json(path: &Path) -> bool {
    let Some(p) = logs_json(path) else {
        return true;
    };
    match logs::LogsConfig::load(&p) {
        Ok(l) => {
            for w in l.warnings {
                eprintln!("warning: {w}");
            }
            true
        }
        Err(e) => {
            for e in e {
                eprintln!("{e}");
            }
            false
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let logs_ok = check_logs_json(path);
    let mut loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_errors(&e);
            // A broken main file must not hide broken connector files: report theirs too
            // (each problem once).
            let mut seen: std::collections::HashSet<String> =
                e.0.iter().map(ToString::to_string).collect();
            let grpc = grpc::Grpc::load(path, false).unwrap_or_default();
            for e in tbgw::connector::check_connector_files(path, &factories(&grpc)) {
                if seen.insert(e.to_string()) {
                    eprintln!("{e}");
                }
            }
            return ExitCode::FAILURE;
        }
    };
    let grpc = match grpc::Grpc::load(path, false) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    grpc.fix_ignored(&mut loaded);
    let connectors = loaded.connectors.len();
    match Gateway::builder()
        .factories(factories(&grpc))
        .config(loaded)
        .check()
    {
        Ok(ignored) => {
            for ig in ignored {
                eprintln!("warning: {ig}");
            }
            if !logs_ok {
                return ExitCode::FAILURE;
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

async fn run(
    path: &Path,
    remote_log: RemoteLogHandle,
    status_socket: Option<PathBuf>,
    last_errors: status::LastErrors,
) -> ExitCode {
    let mut loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_errors(&e);
            return ExitCode::FAILURE;
        }
    };
    let grpc = match grpc::Grpc::load(path, true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    grpc.fix_ignored(&mut loaded);
    let tb = (
        loaded.gateway.thingsboard.host.clone(),
        loaded.gateway.thingsboard.port,
    );
    let storage_cfg = loaded.gateway.storage.clone();
    let names: Vec<String> = loaded.connectors.iter().map(|c| c.name.clone()).collect();
    let gateway = match Gateway::builder()
        .factories(factories(&grpc))
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
    let control = gateway.control();
    let stop_helpers = tokio_util::sync::CancellationToken::new();
    if let Err(e) = grpc.start(stop_helpers.clone()).await {
        eprintln!("{}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let mut status_task = None;
    if let Some(sock) = status_socket {
        let src = status::Sources {
            stats: gateway.stats(),
            connector_stats: names
                .iter()
                .filter_map(|n| Some((n.clone(), gateway.connector_stats(n)?)))
                .collect(),
            storage: gateway.storage(),
            storage_kind: storage_cfg.kind.clone(),
            storage_capacity: storage_capacity(&storage_cfg),
            control: control.clone(),
            thingsboard: tb,
            last_errors,
        };
        match status::serve(sock.clone(), src, stop_helpers.clone()).await {
            Ok(t) => {
                tracing::info!(socket = %sock.display(), "Status served for `tbgw status`.");
                status_task = Some(t);
            }
            Err(e) => {
                tracing::warn!(socket = %sock.display(), error = %e, "Cannot serve the status; `tbgw status` will not work.")
            }
        }
    }
    #[cfg(unix)]
    service_manager(&gateway, control.clone(), stop_helpers.clone());
    let report = gateway.run(shutdown_signal()).await;
    stop_helpers.cancel();
    if let Some(t) = status_task {
        let _ = t.await;
    }
    if report.restart_requested {
        restart_self();
    }
    if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Records the storage can hold, where its configuration says.
fn storage_capacity(cfg: &tbgw::config::StorageConfig) -> Option<u64> {
    match cfg.kind.as_str() {
        "memory" => Some(cfg.max_records_count as u64),
        "file" => Some(cfg.max_file_count? as u64 * cfg.max_records_per_file? as u64),
        _ => None,
    }
}

/// systemd integration (each part only when systemd asks for it): `READY=1` once the
/// storage is open (it is: the gateway is built) and ThingsBoard is connected, `WATCHDOG=1`
/// from this runtime every half `WatchdogSec`, and `SIGHUP` to reload connector files.
#[cfg(unix)]
fn service_manager(
    gateway: &Gateway,
    control: tbgw::service::control::GatewayControl,
    stop: tokio_util::sync::CancellationToken,
) {
    use std::sync::Arc;
    let notifier = systemd::Notifier::from_env().map(Arc::new);
    if let Some(n) = notifier.clone() {
        let stats = gateway.stats();
        let (n2, stop2) = (n.clone(), stop.clone());
        tokio::spawn(async move {
            let (n, stop) = (n2, stop2);
            n.notify("STATUS=Connecting to ThingsBoard");
            loop {
                if stats.thingsboard_connected() > 0 {
                    n.notify("READY=1\nSTATUS=Connected to ThingsBoard");
                    tracing::info!("Ready (told the service manager).");
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
            stop.cancelled().await;
            n.notify("STOPPING=1");
        });
        if let Some(every) = systemd::watchdog_interval() {
            let n = n.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => n.notify("WATCHDOG=1"),
                    }
                }
            });
        }
    }
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = hup.recv() => if r.is_none() { return },
                    }
                    tracing::info!("SIGHUP: reloading connector files.");
                    control.reload();
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "Cannot handle SIGHUP; reload by restarting."),
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
