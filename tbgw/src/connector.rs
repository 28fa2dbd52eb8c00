//! The [`Connector`] trait and the [`ConnectorContext`] through which a connector talks to the
//! rest of the gateway.
//!
//! A connector is built from its configuration without any I/O ([`ConnectorFactory::build`]),
//! then the gateway calls [`Connector::run`] in a task of its own. `run` connects to the field
//! side, converts what it receives into [`DeviceData`](crate::model::DeviceData) and hands
//! it to the [`UplinkSender`]; it answers downlink requests (RPC, attribute updates) that
//! arrive through [`ConnectorContext::recv_downlink`]. It returns `Ok(())` when its cancellation token fires
//! and `Err` when it cannot go on; the gateway then calls `run` again after a backoff, keeping
//! the same context, so no downlink request is lost across a restart.
//!
//! ## Sub-tasks
//!
//! A connector that needs tasks of its own (one per connection, per poll loop, per client)
//! spawns them with [`ConnectorContext::spawn`] (or a [`TaskSpawner`] handed to other tasks),
//! never with `tokio::spawn`. Sub-tasks belong to the current run: when `run` returns, fails,
//! panics or is cancelled, the gateway aborts those still running. A sub-task that panics or
//! returns `Err` is logged with the connector's and the task's name, counted in
//! [`ConnectorStats::task_failures`], and ends the run: the gateway cancels it and calls `run`
//! again after its backoff, as for a failed `run`. Other connectors are not affected.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::downlink::Downlink;
use crate::error::ConfigError;
use crate::stats::{ConnectorCounters, ConnectorStats};
use crate::uplink::{UplinkClosed, UplinkSender};

pub use crate::config::ConnectorSpec;

/// Error returned by [`Connector::run`]: the gateway logs it and restarts the connector with
/// backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The gateway is shutting down and the uplink channel is closed.
    #[error("the gateway is shutting down")]
    Closed,
    /// The field-side connection failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

impl From<UplinkClosed> for ConnectorError {
    /// The uplink channel closes only when the gateway shuts down, so `?` on
    /// [`UplinkSender::send`] ends `run` with [`ConnectorError::Closed`].
    fn from(_: UplinkClosed) -> Self {
        ConnectorError::Closed
    }
}

/// A running connector. See the [module documentation](self).
#[async_trait]
pub trait Connector: Send + 'static {
    /// Runs until the context's cancellation token fires (then returns `Ok(())`) or until an
    /// error the connector cannot recover from by itself (then returns `Err`, and the gateway
    /// calls `run` again after a backoff).
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError>;

    /// Shared attribute keys of its devices the connector acts on (its attribute-update
    /// keys). When a device connects, the gateway requests these from ThingsBoard and hands
    /// them to the connector as an attribute update (`syncDevicesSharedAttributesOnConnect`).
    /// Empty (the default): no sync.
    fn shared_attribute_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds connectors of one type from their configuration. Building validates everything it
/// can and does no I/O; connecting happens in [`Connector::run`].
pub trait ConnectorFactory: Send + Sync {
    /// The connector type this factory builds, as written in `connectors[].type`.
    fn connector_type(&self) -> &'static str;

    /// Builds a connector. Errors name the file, the key path and the reason.
    /// Keys that were present but not used are pushed to `ignored` (as key paths), so the
    /// gateway can log them once.
    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError>;
}

/// Every problem of the connector files the main file names, found even when the main file
/// itself is broken (a wrong type anywhere in it stops [`load`](crate::config::load) before the connector files are
/// read): each entry of its `connectors` list that has a name, a type and a file is read, parsed
/// and built by the factory of its type. What `tbgw check` adds to [`load`](crate::config::load)'s errors, so one run
/// reports every problem of every file.
pub fn check_connector_files(
    file: &std::path::Path,
    factories: &[Box<dyn ConnectorFactory>],
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let Ok(raw) = crate::config::parse::read_file(file) else {
        return errors;
    };
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let entries = raw
        .get("connectors")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |k: &str| entry.get(k).and_then(serde_json::Value::as_str);
        let (Some(name), Some(ty), Some(conf)) =
            (field("name"), field("type"), field("configuration"))
        else {
            continue;
        };
        if !names.insert(name.to_string()) {
            continue;
        }
        let cfile = dir.join(conf);
        let value = match crate::config::read_connector_file(file, i, &cfile) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let spec = match crate::config::connector_spec(name, ty, &cfile, value) {
            Ok((spec, _)) => spec,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match factories.iter().find(|f| f.connector_type() == ty) {
            Some(f) => {
                if let Err(e) = f.build(&spec, &mut Vec::new()) {
                    errors.push(e);
                }
            }
            None => errors.push(ConfigError::new(
                file,
                format!("connectors[name={name}].type"),
                unknown_connector_type(ty, factories),
            )),
        }
    }
    errors
}

/// Why a connector type has no factory: names the types this build does know, so a typo or a
/// factory the application forgot to register is obvious.
pub(crate) fn unknown_connector_type(ty: &str, factories: &[Box<dyn ConnectorFactory>]) -> String {
    let mut known: Vec<&str> = factories.iter().map(|f| f.connector_type()).collect();
    known.sort_unstable();
    known.dedup();
    if known.is_empty() {
        format!("connector type `{ty}` is not available in this build: no connector factory is registered (GatewayBuilder::factory)")
    } else {
        format!(
            "connector type `{ty}` is not available in this build; the registered types are: {}",
            known.join(", ")
        )
    }
}

/// Everything a running connector may use. Only the gateway creates it (or
/// `ConnectorContext::for_test` in tests, feature `test-util`).
#[derive(Debug)]
pub struct ConnectorContext {
    name: Arc<str>,
    uplink: UplinkSender,
    downlink: mpsc::Receiver<Downlink>,
    cancel: CancellationToken,
    stats: ConnectorCounters,
    tasks: TaskSpawner,
    #[cfg(any(test, feature = "test-util"))]
    faults: Arc<FaultHook>,
}

impl ConnectorContext {
    /// The context and the receiver of its first run's sub-task failures.
    pub(crate) fn new(
        name: Arc<str>,
        uplink: UplinkSender,
        downlink: mpsc::Receiver<Downlink>,
        cancel: CancellationToken,
        stats: Arc<ConnectorStats>,
    ) -> (Self, mpsc::UnboundedReceiver<TaskFailure>) {
        #[cfg(any(test, feature = "test-util"))]
        let faults = Arc::new(FaultHook::default());
        let (tasks, failures) = TaskSpawner::new(
            name.clone(),
            stats.clone(),
            cancel.clone(),
            #[cfg(any(test, feature = "test-util"))]
            faults.clone(),
        );
        let cx = ConnectorContext {
            name,
            uplink,
            downlink,
            cancel,
            stats: ConnectorCounters::new(stats),
            tasks,
            #[cfg(any(test, feature = "test-util"))]
            faults,
        };
        (cx, failures)
    }

    /// The connector's name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sender for converted data and device connect/disconnect events. Cheap to clone.
    pub fn uplink(&self) -> &UplinkSender {
        &self.uplink
    }

    /// The next RPC or attribute update for a device this connector owns, or for the connector
    /// itself. `None` once the gateway has shut down.
    pub async fn recv_downlink(&mut self) -> Option<Downlink> {
        self.downlink.recv().await
    }

    /// Fires when the connector must stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Starts a new run: a new cancellation token (the supervisor stops one run to replace the
    /// connector) and a new set of sub-tasks; returns the receiver of its sub-task failures.
    /// The previous run's sub-tasks are aborted.
    pub(crate) fn begin_run(
        &mut self,
        token: CancellationToken,
    ) -> mpsc::UnboundedReceiver<TaskFailure> {
        self.tasks.abort_all();
        self.cancel = token;
        let (tasks, failures) = TaskSpawner::new(
            self.name.clone(),
            self.stats.stats().clone(),
            self.cancel.clone(),
            #[cfg(any(test, feature = "test-util"))]
            self.faults.clone(),
        );
        self.tasks = tasks;
        failures
    }

    /// Aborts the sub-tasks of the current run (the run has ended).
    pub(crate) fn end_run(&self) {
        self.tasks.abort_all();
    }

    /// Spawns a sub-task of the current run, named `task_name` in logs (say which connection
    /// or client it serves, e.g. `connection 10.0.0.5:502`). See the
    /// [module documentation](self#sub-tasks): a panic or an `Err` restarts the connector;
    /// an `Err` after the run's cancellation token fired is only logged at debug level.
    pub fn spawn<F>(&self, task_name: impl Into<String>, fut: F)
    where
        F: Future<Output = Result<(), ConnectorError>> + Send + 'static,
    {
        self.tasks.spawn(task_name, fut);
    }

    /// A handle that spawns sub-tasks of the current run from other tasks (for example a
    /// server task spawning one task per client). Cheap to clone.
    pub fn spawner(&self) -> TaskSpawner {
        self.tasks.clone()
    }

    /// Waits up to `grace` for the current run's sub-tasks to end by themselves (cancel the
    /// token they watch first), then aborts the rest and waits until they are gone, so what
    /// they held is released. Sub-tasks spawned later in this run are dropped without
    /// running. For a graceful end of `run`; the gateway aborts whatever is left anyway.
    pub async fn finish_tasks(&self, grace: Duration) {
        self.tasks.finish(grace).await;
    }

    /// The connector's counters: add to the ones a connector keeps (messages received,
    /// conversion errors, errors, downlink requests handled); clone the handle into sub-tasks.
    pub fn stats(&self) -> &ConnectorCounters {
        &self.stats
    }

    /// A context detached from any gateway, for tests: returns the context and the other ends
    /// of its channels.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test(name: &str) -> (ConnectorContext, TestEnds) {
        let (up_tx, up_rx) = mpsc::channel(1024);
        let (down_tx, down_rx) = mpsc::channel(64);
        let stats = Arc::new(ConnectorStats::default());
        let name: Arc<str> = Arc::from(name);
        let uplink = UplinkSender::new(up_tx, name.clone(), String::new().into(), stats.clone());
        let cancel = CancellationToken::new();
        let (cx, task_failures) =
            ConnectorContext::new(name, uplink, down_rx, cancel.clone(), stats);
        let faults = cx.faults.clone();
        (
            cx,
            TestEnds {
                uplink: up_rx,
                downlink: down_tx,
                cancel,
                task_failures,
                faults,
            },
        )
    }
}

/// A sub-task of a connector run that failed (see the [module documentation](self#sub-tasks)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskFailure {
    /// The name given to [`ConnectorContext::spawn`].
    pub task: String,
    /// The error, or `panicked: <message>`.
    pub reason: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sub-task `{}` failed: {}", self.task, self.reason)
    }
}

/// Spawns sub-tasks of one connector run (see the [module documentation](self#sub-tasks)).
/// Get one with [`ConnectorContext::spawner`]; cheap to clone. Once its run has ended, what
/// it spawns is dropped without running.
#[derive(Clone)]
pub struct TaskSpawner {
    run: Arc<RunTasks>,
}

impl std::fmt::Debug for TaskSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSpawner")
            .field("connector", &self.run.connector)
            .finish_non_exhaustive()
    }
}

/// The sub-tasks of one run.
struct RunTasks {
    connector: Arc<str>,
    stats: Arc<ConnectorStats>,
    /// The run's cancellation token: an `Err` after it fired is shutdown, not a failure.
    cancel: CancellationToken,
    failures: mpsc::UnboundedSender<TaskFailure>,
    /// `None` once the run has ended.
    set: Mutex<Option<JoinSet<()>>>,
    #[cfg(any(test, feature = "test-util"))]
    faults: Arc<FaultHook>,
}

impl TaskSpawner {
    fn new(
        connector: Arc<str>,
        stats: Arc<ConnectorStats>,
        cancel: CancellationToken,
        #[cfg(any(test, feature = "test-util"))] faults: Arc<FaultHook>,
    ) -> (Self, mpsc::UnboundedReceiver<TaskFailure>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let run = RunTasks {
            connector,
            stats,
            cancel,
            failures: tx,
            set: Mutex::new(Some(JoinSet::new())),
            #[cfg(any(test, feature = "test-util"))]
            faults,
        };
        (TaskSpawner { run: Arc::new(run) }, rx)
    }

    /// Spawns a sub-task; see [`ConnectorContext::spawn`].
    pub fn spawn<F>(&self, task_name: impl Into<String>, fut: F)
    where
        F: Future<Output = Result<(), ConnectorError>> + Send + 'static,
    {
        let task: String = task_name.into();
        let run = self.run.clone();
        #[cfg(any(test, feature = "test-util"))]
        let inject = run.faults.take_if_matches(&task);
        let span = tracing::Span::current();
        // Boxed once here: each `async` wrapper below would otherwise hold the connector's
        // future twice (the captured value and the one being awaited), about 8 KB per Modbus
        // connection task instead of 2 KB, which a connector with a task per device pays per
        // device.
        let fut = Box::pin(fut);
        let body = async move {
            let fut = async move {
                #[cfg(any(test, feature = "test-util"))]
                if inject {
                    panic!("injected fault");
                }
                fut.await
            };
            let reason = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(())) => return,
                Ok(Err(e)) if run.cancel.is_cancelled() => {
                    tracing::debug!(connector = %run.connector, task = %task, error = %e, "Connector sub-task ended with an error during shutdown.");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("panicked: {}", panic_message(&*panic)),
            };
            tracing::error!(connector = %run.connector, task = %task, error = %reason, "Connector sub-task failed; restarting the connector.");
            run.stats.add_task_failures(1);
            // The receiver is gone once the run has ended: nothing left to restart.
            let _ = run.failures.send(TaskFailure { task, reason });
        };
        let mut guard = self.run.set.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(set) => {
                // Reap finished tasks so a connector spawning one per client stays bounded.
                while set.try_join_next().is_some() {}
                set.spawn(body.instrument(span));
            }
            None => {
                tracing::debug!(connector = %self.run.connector, "A sub-task spawned after its run ended was dropped.");
            }
        }
    }

    fn abort_all(&self) {
        let set = self
            .run
            .set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(set); // dropping a JoinSet aborts its tasks
    }

    async fn finish(&self, grace: Duration) {
        let set = self
            .run
            .set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut set) = set {
            let _ = tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} })
                .await;
            // Abort the rest and wait until they are gone (and what they held is dropped).
            set.shutdown().await;
        }
    }
}

/// The text of a panic payload when it is a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Test-only fault injection: the next sub-task whose name contains the armed text panics.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
struct FaultHook {
    armed: Mutex<Option<String>>,
}

#[cfg(any(test, feature = "test-util"))]
impl FaultHook {
    fn take_if_matches(&self, task: &str) -> bool {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        if armed.as_deref().is_some_and(|t| task.contains(t)) {
            *armed = None;
            return true;
        }
        false
    }
}

/// The gateway's ends of a test [`ConnectorContext`].
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct TestEnds {
    /// What the connector sent.
    pub uplink: mpsc::Receiver<crate::uplink::UplinkMessage>,
    /// Send downlink requests to the connector.
    pub downlink: mpsc::Sender<Downlink>,
    /// Cancel the connector.
    pub cancel: CancellationToken,
    /// Sub-task failures of the context's first run (logged and counted as under the
    /// gateway; nothing restarts the connector unless it runs under
    /// [`ConnectorContext::supervise`]).
    pub task_failures: mpsc::UnboundedReceiver<TaskFailure>,
    faults: Arc<FaultHook>,
}

#[cfg(any(test, feature = "test-util"))]
impl TestEnds {
    /// Fault injection: the next sub-task spawned whose name contains `task_name_part`
    /// panics as soon as it starts (once). For tests of a connector's recovery where the
    /// protocol offers no realistic way to make a sub-task fail.
    pub fn fail_next_task(&self, task_name_part: &str) {
        *self.faults.armed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(task_name_part.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records every event's fields as `name=value` lines.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _cx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V(String);
            impl tracing::field::Visit for V {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={:?} ", f.name(), v));
                }
                fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                    self.0.push_str(&format!("{}={} ", f.name(), v));
                }
            }
            let mut v = V(format!("{} ", event.metadata().level()));
            event.record(&mut v);
            self.0.lock().unwrap().push(v.0);
        }
    }

    /// Tests that hit the failure log line run one at a time: tracing caches a call site's
    /// interest, and a thread without a subscriber racing the capturing one can hide it.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn a_panicking_or_failing_sub_task_is_logged_counted_and_reported() {
        let _serial = SERIAL.lock().await;
        let capture = Capture::default();
        let _log =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
        let (cx, mut ends) = ConnectorContext::for_test("Plant");
        cx.spawn("poller 10.0.0.5:502", async {
            panic!("index out of bounds")
        });
        let f = ends.task_failures.recv().await.expect("failure reported");
        assert_eq!(f.task, "poller 10.0.0.5:502");
        assert_eq!(f.reason, "panicked: index out of bounds");
        let n = 7;
        cx.spawn("formatter", async move { panic!("bad value {n}") });
        let f = ends.task_failures.recv().await.expect("failure reported");
        assert_eq!(f.reason, "panicked: bad value 7");
        cx.spawn("client", async {
            Err(ConnectorError::Connection("refused".into()))
        });
        let f = ends.task_failures.recv().await.expect("failure reported");
        assert_eq!(
            f.to_string(),
            "sub-task `client` failed: connection failed: refused"
        );
        assert_eq!(ConnectorStats::get(&cx.stats().task_failures), 3);
        let logs = capture.0.lock().unwrap().join("\n");
        assert!(
            logs.lines().any(|l| l.starts_with("ERROR")
                && l.contains("connector=Plant")
                && l.contains("task=poller 10.0.0.5:502")
                && l.contains("index out of bounds")),
            "{logs}"
        );
        // A task that ends well is neither reported nor counted.
        cx.spawn("fine", async { Ok(()) });
        cx.finish_tasks(Duration::from_secs(5)).await;
        assert!(ends.task_failures.try_recv().is_err());
        assert_eq!(ConnectorStats::get(&cx.stats().task_failures), 3);
    }

    #[tokio::test]
    async fn an_error_after_cancellation_is_shutdown_not_a_failure() {
        let _serial = SERIAL.lock().await;
        let (cx, mut ends) = ConnectorContext::for_test("Plant");
        let cancel = cx.cancellation().clone();
        cx.spawn("poller", async move {
            cancel.cancelled().await;
            Err(ConnectorError::Closed)
        });
        ends.cancel.cancel();
        cx.finish_tasks(Duration::from_secs(5)).await;
        assert!(ends.task_failures.try_recv().is_err());
        assert_eq!(ConnectorStats::get(&cx.stats().task_failures), 0);
    }

    #[tokio::test]
    async fn sub_tasks_end_with_their_run_and_later_spawns_are_dropped() {
        let _serial = SERIAL.lock().await;
        let (mut cx, _ends) = ConnectorContext::for_test("Plant");
        let (tx, mut rx) = mpsc::channel::<()>(1);
        // Never finishes by itself; holds `tx` until aborted.
        let held = tx.clone();
        cx.spawn("forever", async move {
            let _tx = held;
            std::future::pending::<Result<(), ConnectorError>>().await
        });
        let spawner = cx.spawner();
        let _failures = cx.begin_run(CancellationToken::new());
        drop(tx);
        // Aborted: its sender is dropped, so the channel closes.
        assert!(rx.recv().await.is_none());
        // The old run's spawner no longer runs anything.
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        spawner.spawn("late", async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        // The new run's spawner does.
        let r = ran.clone();
        cx.spawn("new", async move {
            r.fetch_add(10, Ordering::SeqCst);
            Ok(())
        });
        cx.finish_tasks(Duration::from_secs(5)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        cx.end_run();
    }

    #[tokio::test]
    async fn finished_sub_tasks_are_reaped_so_one_per_client_stays_bounded() {
        let _serial = SERIAL.lock().await;
        let (cx, _ends) = ConnectorContext::for_test("Plant");
        for i in 0..10_000 {
            cx.spawn(format!("client {i}"), async { Ok(()) });
            // Let the spawned ones run (the test runtime runs a few dozen per yield).
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::task::yield_now().await;
        cx.spawn("last", async { Ok(()) });
        let held = cx.tasks.run.set.lock().unwrap().as_ref().map(JoinSet::len);
        assert!(held.is_some_and(|n| n <= 20), "{held:?} tasks held");
    }

    #[tokio::test]
    async fn fault_injection_hits_the_next_matching_task_once() {
        let _serial = SERIAL.lock().await;
        let (cx, mut ends) = ConnectorContext::for_test("Plant");
        ends.fail_next_task("poll");
        cx.spawn("other", async { Ok(()) });
        cx.spawn("poll 1", async { Ok(()) });
        cx.spawn("poll 2", async { Ok(()) });
        let f = ends.task_failures.recv().await.expect("injected");
        assert_eq!(
            (f.task.as_str(), f.reason.as_str()),
            ("poll 1", "panicked: injected fault")
        );
        cx.finish_tasks(Duration::from_secs(5)).await;
        assert!(ends.task_failures.try_recv().is_err());
    }
}
