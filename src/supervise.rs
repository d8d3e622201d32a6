//! Supervision of `rollbackd watch`'s long-lived tasks: the dispatcher, each
//! rule group, the HTTP server, a running rollback, leader election.
//!
//! A task that panics (or, for one meant to run for the life of the
//! process, ends) is logged at ERROR with what it said, counted in
//! `rollbackd_task_failures_total{task}`, makes `/healthz` answer 503 naming
//! it, and makes `watch` stop the way SIGTERM does (a running rollback
//! finishes its phase and journals it) and exit 70. A daemon with a dead
//! part is never left looking healthy: the orchestrator restarts it, and
//! the restart settles whatever was left unfinished from the journal.
//!
//! One supervisor per process ([`global`]), like the metrics recorder:
//! failures anywhere (state backends included) reach the one `watch` loop.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The first task that failed, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {task} task failed: {why}; rollbackd is stopping so that it can be restarted")]
pub(crate) struct TaskFailure {
    pub task: String,
    pub why: String,
}

#[derive(Debug)]
struct Inner {
    failure: watch::Sender<Option<TaskFailure>>,
    stopping: Mutex<bool>,
}

/// Where supervised tasks report; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Supervisor(Arc<Inner>);

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor(Arc::new(Inner {
            failure: watch::channel(None).0,
            stopping: Mutex::new(false),
        }))
    }
}

/// The process's supervisor.
pub(crate) fn global() -> &'static Supervisor {
    static GLOBAL: OnceLock<Supervisor> = OnceLock::new();
    GLOBAL.get_or_init(Supervisor::default)
}

impl Supervisor {
    /// Runs `future` as a task; a panic is reported as a failure of `task`
    /// and the handle then yields `None`.
    pub(crate) fn spawn<F>(
        &self,
        task: impl Into<String>,
        future: F,
    ) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (this, task) = (self.clone(), task.into());
        tokio::spawn(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(out) => Some(out),
                Err(panic) => {
                    this.fail(&task, panic_message(panic.as_ref()));
                    None
                }
            }
        })
    }

    /// Runs `future`, which is meant to run until the process stops: ending
    /// earlier is a failure too, as is a panic.
    pub(crate) fn spawn_forever<F, T>(&self, task: &'static str, future: F) -> JoinHandle<()>
    where
        F: Future<Output = T> + Send + 'static,
        T: std::fmt::Debug + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                // Tasks end when the process stops; only before is it a failure.
                Ok(_) if this.is_stopping() => {}
                Ok(out) => this.fail(task, format!("it ended ({out:?})")),
                Err(panic) => this.fail(task, panic_message(panic.as_ref())),
            }
        })
    }

    /// Runs `work` on a thread of its own (named after `task`); a panic
    /// there is a failure of `task`, as in a supervised task.
    pub(crate) fn thread(
        &self,
        task: &'static str,
        work: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let this = self.clone();
        std::thread::Builder::new()
            .name(format!("rollbackd-{}", task.replace(' ', "-")))
            .spawn(move || {
                if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(work)) {
                    this.fail(task, panic_message(panic.as_ref()));
                }
            })
            .map(|_| ())
    }

    fn is_stopping(&self) -> bool {
        *self
            .0
            .stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `task` failed: logged and counted always; the first
    /// failure is kept (and stops `watch`), even one while stopping, so a
    /// run that panics during a drain still exits 70.
    pub(crate) fn fail(&self, task: &str, why: String) {
        crate::telemetry::events::task_failed(task, &why);
        self.0.failure.send_if_modified(|first| {
            if first.is_some() {
                return false;
            }
            *first = Some(TaskFailure {
                task: task.to_string(),
                why,
            });
            true
        });
    }

    /// The first failure, if any.
    pub(crate) fn failure(&self) -> Option<TaskFailure> {
        self.0.failure.borrow().clone()
    }

    /// Resolves at the first failure.
    pub(crate) async fn failed(&self) -> TaskFailure {
        let mut rx = self.0.failure.subscribe();
        loop {
            if let Some(failure) = rx.borrow_and_update().clone() {
                return failure;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`; this cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The process is stopping: tasks that end from now on are not failures
    /// (a panic still is).
    pub(crate) fn stopping(&self) {
        *self
            .0
            .stopping
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_its_handle_yields_none() {
        let supervisor = Supervisor::default();
        let handle = supervisor.spawn("dispatcher", async {
            if true {
                panic!("duration overflow");
            }
            7
        });
        assert_eq!(handle.await.unwrap(), None);
        let failure = supervisor.failure().expect("the panic is recorded");
        assert_eq!(failure.task, "dispatcher");
        assert_eq!(failure.why, "panicked: duration overflow");
        assert_eq!(supervisor.failed().await, failure);
        assert!(failure
            .to_string()
            .contains("stopping so that it can be restarted"));
    }

    #[tokio::test]
    async fn a_task_meant_to_run_forever_fails_when_it_ends_but_not_while_stopping() {
        let supervisor = Supervisor::default();
        let ok = supervisor.spawn("group api", async { 1 });
        assert_eq!(ok.await.unwrap(), Some(1));
        assert_eq!(supervisor.failure(), None, "a task that returns is fine");

        supervisor
            .spawn_forever("http server", async { Err::<(), _>("accept failed") })
            .await
            .unwrap();
        let failure = supervisor.failure().unwrap();
        assert_eq!(failure.task, "http server");
        assert!(failure.why.contains("accept failed"), "{failure:?}");
        // Only the first failure is kept.
        supervisor.fail("dispatcher", "later".into());
        assert_eq!(supervisor.failure().unwrap().task, "http server");

        let quiet = Supervisor::default();
        quiet.stopping();
        quiet.spawn_forever("dispatcher", async {}).await.unwrap();
        assert_eq!(quiet.failure(), None, "ending while stopping is fine");
        quiet
            .spawn("rollback", async { panic!("mid-drain") })
            .await
            .unwrap();
        assert_eq!(
            quiet.failure().unwrap().why,
            "panicked: mid-drain",
            "a panic is not"
        );

        // A thread of its own, too.
        let threads = Supervisor::default();
        threads
            .thread("state store", || panic!("worker died"))
            .unwrap();
        let failure = tokio::time::timeout(std::time::Duration::from_secs(5), threads.failed())
            .await
            .unwrap();
        assert_eq!(failure.task, "state store");
    }
}
