//! In-memory fakes for the engine's boundaries, for tests on tokio's paused
//! clock: a platform that records every call in order, a service whose
//! health answers are scripted, and an engine wired to both with its state
//! in a temporary directory. Nothing here touches the network.
//!
//! Over 600 lines on purpose: each fake is one boundary the engine tests
//! script together (platform, its logs, the service's answers, notifiers, the
//! rig); split, every test module would import from several places.
//!
//! Over 600 lines on purpose: one file of fakes, test builds only, so that
//! every engine and dispatcher test builds its rig from the same pieces.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use super::{Engine, EngineConfig, EngineSetup};
use crate::clock::Clock;
use crate::notify::{Notification, Notifier, Notifiers, NotifyError, NotifyEvent};
use crate::provider::DeploymentStatus;
use crate::provider::{DeployProvider, Deployment, LogLine, ProviderError};
use crate::verify::config::VerifyConfig;
use crate::verify::{Answer, HealthProbe};

/// One call the platform received, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    List,
    Status(String),
    Rollback(String),
    Cancel(String),
}

/// What the fake platform does with a rollback call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RollbackBehaviour {
    /// Creates a deployment that is SUCCESS after `polls` calls.
    Succeed { polls: u32 },
    /// As `Succeed`, but does not say which deployment it created (as
    /// Railway's `deploymentRollback`, a plain Boolean).
    SucceedSilently { polls: u32 },
    /// Creates a deployment that ends FAILED.
    Fail,
    /// As `Fail`, but does not say which deployment it created.
    FailSilently,
    /// Refuses the call.
    Refuse,
    /// Creates a deployment that never leaves DEPLOYING.
    Hang,
}

struct PlatformState {
    deployments: Vec<Deployment>,
    calls: Vec<Call>,
    behaviour: RollbackBehaviour,
    /// Status calls seen per created deployment.
    polled: u32,
    /// Every call takes this long (paused clock: it costs nothing).
    latency: Duration,
    /// What `logs` answers: `None`, the platform reads no logs.
    logs: Option<Result<Vec<String>, String>>,
    /// Each `logs` request: deployment, from, to.
    log_requests: Vec<(String, SystemTime, SystemTime)>,
    /// A `logs` request takes this long.
    logs_latency: Duration,
    /// Whether `cancel` works (a platform without one says so).
    cancels: bool,
    /// A deployment a rollback created is listed only this long after.
    list_lag: Duration,
    /// When each deployment created by a rollback shows in the list.
    listed_from: Vec<(String, tokio::time::Instant)>,
    /// What `list_settle` answers.
    list_settle: Duration,
    /// A rollback answers this long after it created the deployment.
    answer_delay: Duration,
}

/// A deploy platform in memory: deployments newest first; a rollback creates
/// a new deployment of the target.
pub(crate) struct FakePlatform {
    state: Mutex<PlatformState>,
}

pub(crate) fn deployment(id: &str, status: &str, age: Duration, now: SystemTime) -> Deployment {
    Deployment {
        id: id.into(),
        status: status.into(),
        created_at: now - age,
        git_sha: Some(format!("sha-{id}")),
        git_branch: Some("main".into()),
        can_rollback: None,
    }
}

impl FakePlatform {
    /// `d2` live (deployed 10 minutes ago), `d1` before it.
    pub(crate) fn new(now: SystemTime) -> Arc<FakePlatform> {
        Arc::new(FakePlatform {
            state: Mutex::new(PlatformState {
                deployments: vec![
                    deployment("d2", "SUCCESS", Duration::from_secs(600), now),
                    deployment("d1", "REMOVED", Duration::from_secs(7200), now),
                ],
                calls: Vec::new(),
                behaviour: RollbackBehaviour::Succeed { polls: 1 },
                polled: 0,
                latency: Duration::ZERO,
                logs: None,
                log_requests: Vec::new(),
                logs_latency: Duration::ZERO,
                cancels: false,
                list_lag: Duration::ZERO,
                listed_from: Vec::new(),
                list_settle: crate::provider::DEFAULT_LIST_SETTLE,
                answer_delay: Duration::ZERO,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PlatformState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_behaviour(&self, behaviour: RollbackBehaviour) {
        self.state().behaviour = behaviour;
    }

    /// A deployment a rollback creates is listed only `lag` later (its
    /// `status` answers at once); `settle` is the provider's `list_settle`.
    pub(crate) fn set_list_lag(&self, lag: Duration, settle: Duration) {
        let mut s = self.state();
        s.list_lag = lag;
        s.list_settle = settle;
    }

    /// A rollback creates its deployment at once and answers `delay` later
    /// (an answer a kill can lose).
    pub(crate) fn set_answer_delay(&self, delay: Duration) {
        self.state().answer_delay = delay;
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// The platform reads logs: every deployment's are `lines`, or the
    /// request fails with `Err`.
    pub(crate) fn set_logs(&self, lines: Result<&[&str], &str>) {
        self.state().logs = Some(
            lines
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .map_err(str::to_string),
        );
    }

    /// A logs request takes `latency` (paused clock: it costs nothing).
    pub(crate) fn set_logs_latency(&self, latency: Duration) {
        self.state().logs_latency = latency;
    }

    /// Each logs request: deployment, from, to.
    pub(crate) fn log_requests(&self) -> Vec<(String, SystemTime, SystemTime)> {
        self.state().log_requests.clone()
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The targets of every rollback call, in order.
    pub(crate) fn rollbacks(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Rollback(target) => Some(target),
                _ => None,
            })
            .collect()
    }

    /// An older deployment, `age` before now.
    pub(crate) fn push_old(&self, id: &str, status: &str, age: Duration, now: SystemTime) {
        self.state()
            .deployments
            .push(deployment(id, status, age, now));
    }

    /// A newer deployment starts and is still on its way (`status`).
    pub(crate) fn begin_deploy(&self, id: &str, status: &str) {
        let mut s = self.state();
        let created_at = s.deployments[0].created_at + Duration::from_secs(60);
        s.deployments
            .insert(0, deployment(id, status, Duration::ZERO, created_at));
    }

    /// A deployment's status changes (a deploy in progress settles).
    pub(crate) fn set_status(&self, id: &str, status: &str) {
        for d in self.state().deployments.iter_mut().filter(|d| d.id == id) {
            d.status = status.into();
        }
    }

    /// The platform can cancel a deployment in progress.
    pub(crate) fn allow_cancel(&self) {
        self.state().cancels = true;
    }

    pub(crate) fn live(&self) -> Option<String> {
        self.state()
            .deployments
            .iter()
            .find(|d| d.is_success())
            .map(|d| d.id.clone())
    }

    async fn call(&self, call: Call) {
        let latency = {
            let mut s = self.state();
            s.calls.push(call);
            s.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

impl DeployProvider for FakePlatform {
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<Deployment>, ProviderError>> {
        Box::pin(async move {
            self.call(Call::List).await;
            let mut s = self.state();
            advance(&mut s);
            let now = tokio::time::Instant::now();
            let hidden = |d: &&Deployment| {
                s.listed_from
                    .iter()
                    .any(|(id, from)| *id == d.id && *from > now)
            };
            Ok(s.deployments
                .iter()
                .filter(|d| !hidden(d))
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>> {
        Box::pin(async move {
            self.call(Call::Status(id.to_string())).await;
            let mut s = self.state();
            advance(&mut s);
            s.deployments
                .iter()
                .find(|d| d.id == id)
                .cloned()
                .ok_or_else(|| ProviderError::NotFound(id.to_string()))
        })
    }

    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            self.call(Call::Rollback(target.id.clone())).await;
            let (silent, id, delay) = {
                let mut s = self.state();
                let silent = matches!(
                    s.behaviour,
                    RollbackBehaviour::SucceedSilently { .. } | RollbackBehaviour::FailSilently
                );
                if s.behaviour == RollbackBehaviour::Refuse {
                    return Err(ProviderError::Api {
                        what: "the fake platform".into(),
                        message: "rollback refused".into(),
                    });
                }
                let id = format!("{}-redeploy-{}", target.id, s.calls.len());
                let created_at =
                    target.created_at.max(s.deployments[0].created_at) + Duration::from_secs(1);
                s.deployments.insert(
                    0,
                    Deployment {
                        id: id.clone(),
                        status: "DEPLOYING".into(),
                        created_at,
                        git_sha: target.git_sha.clone(),
                        git_branch: target.git_branch.clone(),
                        can_rollback: None,
                    },
                );
                s.polled = 0;
                let from = tokio::time::Instant::now() + s.list_lag;
                s.listed_from.push((id.clone(), from));
                Ok((silent, id, s.answer_delay))
            }?;
            tokio::time::sleep(delay).await;
            Ok((!silent).then_some(id))
        })
    }

    fn cancels(&self) -> bool {
        self.state().cancels
    }

    fn list_settle(&self) -> Duration {
        self.state().list_settle
    }

    fn cancel<'a>(&'a self, d: &'a Deployment) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.call(Call::Cancel(d.id.clone())).await;
            let mut s = self.state();
            match s.deployments.iter_mut().find(|x| x.id == d.id) {
                Some(x) if x.in_progress() => {
                    x.status = "REMOVED".into();
                    Ok(())
                }
                _ => Err(ProviderError::Api {
                    what: "the fake platform".into(),
                    message: format!("deployment {} is not in progress", d.id),
                }),
            }
        })
    }

    fn reads_logs(&self) -> bool {
        self.state().logs.is_some()
    }

    fn logs<'a>(
        &'a self,
        id: &'a str,
        from: SystemTime,
        to: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<LogLine>, ProviderError>> {
        Box::pin(async move {
            let (latency, answer) = {
                let mut s = self.state();
                s.log_requests.push((id.to_string(), from, to));
                (s.logs_latency, s.logs.clone().unwrap_or(Ok(Vec::new())))
            };
            tokio::time::sleep(latency).await;
            match answer {
                Ok(lines) => Ok(lines
                    .into_iter()
                    .map(|message| LogLine {
                        at: None,
                        level: None,
                        message,
                    })
                    .collect()),
                Err(message) => Err(ProviderError::Http {
                    what: "the fake platform".into(),
                    status: 503,
                    body: message,
                }),
            }
        })
    }
}

/// One look at the platform: a deployment on its way moves along.
fn advance(s: &mut PlatformState) {
    let Some(index) = s
        .deployments
        .iter()
        .position(|d| d.status == DeploymentStatus::Deploying)
    else {
        return;
    };
    s.polled += 1;
    let next = match s.behaviour {
        RollbackBehaviour::Succeed { polls } | RollbackBehaviour::SucceedSilently { polls }
            if s.polled >= polls =>
        {
            Some("SUCCESS")
        }
        RollbackBehaviour::Fail | RollbackBehaviour::FailSilently => Some("FAILED"),
        _ => None,
    };
    if next == Some("SUCCESS") {
        for d in &mut s.deployments {
            if d.is_success() {
                d.status = "REMOVED".into();
            }
        }
    }
    if let Some(next) = next {
        s.deployments[index].status = next.into();
    }
}

/// A service whose health endpoints answer as scripted.
#[derive(Default)]
pub(crate) struct FakeService {
    state: Mutex<ServiceState>,
}

#[derive(Default)]
struct ServiceState {
    unhealthy: bool,
    /// The next this many checks fail, whatever `unhealthy` says.
    failing_checks: u32,
    latency: Duration,
    checks: Vec<String>,
    /// Status and body by path, instead of 200 and [`seed_body`].
    answers: std::collections::BTreeMap<String, (u16, String)>,
}

impl FakeService {
    pub(crate) fn set_unhealthy(&self, unhealthy: bool) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unhealthy = unhealthy;
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latency = latency;
    }

    /// The next `n` checks fail (a service still starting).
    pub(crate) fn fail_next(&self, n: u32) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failing_checks = n;
    }

    /// `path` answers `status` and `body` from now on.
    pub(crate) fn set_answer(&self, path: &str, status: u16, body: &str) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answers
            .insert(path.into(), (status, body.into()));
    }

    /// The URLs asked so far.
    pub(crate) fn checks(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .checks
            .clone()
    }
}

impl HealthProbe for FakeService {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
        timeout: Duration,
        _read_body: bool,
    ) -> BoxFuture<'a, Result<Answer, crate::verify::FetchError>> {
        Box::pin(async move {
            let (status, latency, body) = {
                let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                s.checks.push(url.to_string());
                let starting = s.failing_checks > 0;
                s.failing_checks = s.failing_checks.saturating_sub(1);
                let path = url.find("/health").map_or("/", |i| &url[i..]);
                let (status, body) = s
                    .answers
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| (200, seed_body(path)));
                let status = if s.unhealthy || starting { 503 } else { status };
                (status, s.latency, body)
            };
            if latency >= timeout {
                tokio::time::sleep(timeout).await;
                return Err(crate::verify::FetchError::Timeout(timeout));
            }
            tokio::time::sleep(latency).await;
            Ok(Answer {
                status,
                body: body.into_bytes(),
            })
        })
    }
}

/// What the seed's service answers at `path`, all healthy: the components
/// the shipped verification reads.
pub(crate) fn seed_body(path: &str) -> String {
    match path {
        "/health/performance" => r#"{"status":"healthy","components":{"database":{"status":"healthy","response_time_ms":12},"redis":{"status":"healthy","response_time_ms":2}}}"#.into(),
        "/health/external-services" => r#"{"status":"healthy","services":{"openai":{"status":"healthy"},"sendgrid":{"status":"healthy"},"firebase":{"status":"healthy"}}}"#.into(),
        _ => r#"{"status":"healthy"}"#.into(),
    }
}

/// A notifier that remembers what it was sent, in order.
#[derive(Default)]
pub(crate) struct RecordingNotifier {
    sent: Mutex<Vec<NotifyEvent>>,
    /// Every notification in full, in order.
    pub full: Mutex<Vec<Notification>>,
}

impl Notifier for RecordingNotifier {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        n: &'a Notification,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(n.event);
        self.full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(n.clone());
        Box::pin(async { Ok(()) })
    }
}

/// An engine on fakes, with its state in a temporary directory.
pub(crate) struct Rig {
    pub engine: Arc<Engine>,
    pub platform: Arc<FakePlatform>,
    pub service: Arc<FakeService>,
    pub notices: Arc<RecordingNotifier>,
    /// The state directory, removed when the rig is dropped.
    _state: tempfile::TempDir,
}

/// The rig's setup: default engine config with its state in `dir`, the
/// service at a fake base URL, a short initial verification wait.
pub(crate) fn setup(dir: &std::path::Path) -> EngineSetup {
    let mut setup = EngineSetup {
        config: EngineConfig::default(),
        verify: VerifyConfig::default(),
        retention: None,
        base_url: Some("http://service.test".into()),
        db: None,
        notifiers: None,
        gitops: None,
        state: None,
        leadership: None,
    };
    setup.config.state_dir = dir.to_path_buf();
    setup.verify.initial_wait = Duration::from_secs(1);
    setup
}

impl Rig {
    /// Must be called inside a tokio runtime (the clock anchors to it).
    pub(crate) fn new(tweak: impl FnOnce(&mut EngineSetup)) -> Rig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let notices = Arc::new(RecordingNotifier::default());
        let mut setup = setup(dir.path());
        setup.notifiers = Some(Notifiers::from_notifiers(
            vec![notices.clone()],
            &crate::service::ServiceConfig::default(),
        ));
        tweak(&mut setup);
        let clock = Clock::tokio();
        let platform = FakePlatform::new(clock.now());
        let service = Arc::new(FakeService::default());
        let engine = Engine::new(setup, platform.clone())
            .expect("the engine builds from the rig's config")
            .with_parts(service.clone(), clock);
        Rig {
            engine: Arc::new(engine),
            platform,
            service,
            notices,
            _state: dir,
        }
    }

    /// What the notifiers were sent so far, in order (deliveries are tasks:
    /// let them run first, e.g. with a short sleep on the paused clock).
    pub(crate) fn notices(&self) -> Vec<NotifyEvent> {
        self.notices
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the notifiers were sent, once deliveries so far ran (a short
    /// sleep on the paused clock).
    pub(crate) async fn delivered(&self) -> Vec<NotifyEvent> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.notices()
    }

    pub(crate) fn history(&self) -> crate::history::History {
        self.engine.history().load().expect("a readable history")
    }

    /// A new engine on the same state directory, platform, service and
    /// notifiers, with the rig's database (if any) given again: rollbackd
    /// after a restart.
    pub(crate) fn restarted(&self, db: Option<super::DbSetup>) -> Engine {
        let mut setup = setup(self._state.path());
        setup.notifiers = Some(Notifiers::from_notifiers(
            vec![self.notices.clone()],
            &crate::service::ServiceConfig::default(),
        ));
        setup.db = db;
        Engine::new(setup, self.platform.clone())
            .expect("the engine builds from the rig's config")
            .with_parts(self.service.clone(), self.engine.clock)
    }

    pub(crate) fn state_dir(&self) -> &std::path::Path {
        self._state.path()
    }

    /// Opens the breaker for `run` at the engine's time now, which it
    /// returns.
    pub(crate) fn open_breaker(&self, run: &str, reason: &str) -> SystemTime {
        let now = self.engine.clock.now();
        self.open_breaker_at(now, run, reason);
        now
    }

    /// Opens the breaker for `run` as at `at`.
    pub(crate) fn open_breaker_at(&self, at: SystemTime, run: &str, reason: &str) {
        self.engine.breaker().open(at, run, reason).unwrap();
    }
}

/// A status board with one group `service` holding `rules`, each a
/// `(name, firing)` pair: what the watcher would show.
pub(crate) fn board(rules: &[(&str, bool)]) -> Arc<crate::watch::StatusBoard> {
    board_with_for(rules, "0s")
}

/// As [`board`], each rule with `for: hold`: a breaching rule with a long
/// `for` is pending.
pub(crate) fn board_with_for(rules: &[(&str, bool)], hold: &str) -> Arc<crate::watch::StatusBoard> {
    use crate::rules::{Input, Labels};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut yaml = String::from("groups:\n  - name: service\n    interval: 10s\n    rules:\n");
    for (name, _) in rules {
        yaml.push_str(&format!(
            "      - name: {name}\n        expr: sum(rate(errors_total[1m]))\n        above: 0.1\n        for: {hold}\n        policy: auto\n"
        ));
    }
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, yaml).expect("the rule file is written");
    let set = crate::rules::load_paths(&[path], &Default::default(), Duration::from_secs(10))
        .expect("the board's rules load");
    let group = set.groups.into_iter().next().expect("one group");
    let now = SystemTime::now();
    let runtimes = group
        .rules
        .iter()
        .zip(rules)
        .map(|(rule, (_, firing))| {
            let mut rt = crate::watch::RuleRuntime::new(rule.clone());
            if *firing {
                // Without `for`, one breach fires it; with one, it is pending.
                rt.state.step(now, Input::breach(Labels::new(), 0.5));
            }
            rt
        })
        .collect();
    let board = Arc::new(crate::watch::StatusBoard::default());
    board.register_group(&group.name, group.interval, runtimes);
    board
}

/// A migration tool in memory: the database is at `current`; asking for the
/// downgrade SQL fails when `sql` is `None`.
pub(crate) struct FakeMigrations {
    pub current: Mutex<Option<String>>,
    pub sql: Option<String>,
}

impl crate::db::migrate::MigrationTool for FakeMigrations {
    fn current<'a>(
        &'a self,
        _db: &'a crate::db::Database,
    ) -> BoxFuture<'a, Result<Option<String>, crate::db::DbError>> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(current) })
    }

    fn downgrade_sql<'a>(
        &'a self,
        _db: &'a crate::db::Database,
        _from: &'a str,
        _to: &'a str,
    ) -> BoxFuture<'a, Result<String, crate::db::DbError>> {
        let sql = self
            .sql
            .clone()
            .ok_or_else(|| crate::db::DbError::Tool("alembic: cannot locate revision".into()));
        Box::pin(async move { sql })
    }

    fn downgrade<'a>(
        &'a self,
        _db: &'a crate::db::Database,
        _to: &'a str,
        _statement_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), crate::db::DbError>> {
        Box::pin(async { Err(crate::db::DbError::Tool("the fake never downgrades".into())) })
    }
}

/// A database section for the rig: nothing listens at its URL, and its
/// `pg_dump` does not exist, so a backup fails at once (a warning unless
/// `backup_required`). Revisions are recorded in `state`.
pub(crate) fn database(
    state: &std::path::Path,
    tool: Arc<FakeMigrations>,
    tweak: impl FnOnce(&mut crate::db::config::DatabaseConfig),
) -> super::DbSetup {
    let mut config = crate::db::config::DatabaseConfig {
        pg_dump: "/nonexistent/rollbackd-test/pg_dump".into(),
        ..Default::default()
    };
    tweak(&mut config);
    let database = crate::db::Database::new(crate::secret::Secret::new(
        "postgres://rollbackd@127.0.0.1:9/app",
    ))
    .expect("a valid URL");
    super::DbSetup {
        database,
        config,
        tool: Some(tool),
        revisions: crate::db::revisions::RevisionStore::new(crate::state::Doc::file(
            crate::state::StateDir::new(state).revisions(),
        )),
        backup_dir: crate::state::StateDir::new(state).backups(),
        store: None,
    }
}

/// Migrations in memory: the database is at `current`; the downgrade SQL is
/// `sql` (asking for it fails when `None`).
pub(crate) fn migrations(current: &str, sql: Option<&str>) -> Arc<FakeMigrations> {
    Arc::new(FakeMigrations {
        current: Mutex::new(Some(current.into())),
        sql: sql.map(str::to_string),
    })
}

/// A setup tweak for [`Rig::new`]: the rig's [`database`] on `tool`,
/// configured by `tweak`.
pub(crate) fn with_database(
    tool: Arc<FakeMigrations>,
    tweak: impl FnOnce(&mut crate::db::config::DatabaseConfig),
) -> impl FnOnce(&mut EngineSetup) {
    move |s| {
        let state = s.config.state_dir.clone();
        s.db = Some(database(&state, tool, tweak));
    }
}
