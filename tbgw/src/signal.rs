//! Stopping the gateway the way services are stopped.
//!
//! [`Gateway::run`](crate::Gateway::run) takes any future as its shutdown trigger;
//! [`shutdown_signal`] is the usual one: Ctrl-C in a terminal, `SIGTERM` from systemd, Docker,
//! Kubernetes or `kill`. With it the gateway shuts down gracefully (connectors stop, what they
//! sent is stored, storage is flushed, in-flight publishes get their PUBACKs) instead of being
//! killed mid-write.

/// Resolves on the first `SIGINT` (Ctrl-C) or, on Unix, `SIGTERM`. If a handler cannot be
/// installed, that signal is simply not waited for.
///
/// ```no_run
/// # async fn run(gateway: tbgw::Gateway) {
/// let report = gateway.run(tbgw::signal::shutdown_signal()).await;
/// # let _ = report; }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
