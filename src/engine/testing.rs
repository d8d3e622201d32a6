//! In-memory fakes for the engine's boundaries, for tests on tokio's paused
//! clock: a platform that records every call in order, a service whose
//! health answers are scripted, and an engine wired to both with its state
//! in a temporary directory. Nothing here touches the network.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

use super::{Engine, EngineConfig, EngineSetup};
use crate::clock::Clock;
use crate::provider::{DeployProvider, Deployment, ProviderError};
use crate::verify::config::VerifyConfig;
use crate::verify::{CheckResult, HealthProbe};

/// One call the platform received, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    List,
    Status(String),
    Rollback(String),
}

/// What the fake platform does with a rollback call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RollbackBehaviour {
    /// Creates a deployment that is SUCCESS after `polls` status calls.
    Succeed { polls: u32 },
    /// Creates a deployment that ends FAILED.
    Fail,
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
}

/// A deploy platform in memory: deployments newest first; a rollback creates
/// a new deployment of the target.
pub struct FakePlatform {
    state: Mutex<PlatformState>,
}

pub fn deployment(id: &str, status: &str, age: Duration, now: SystemTime) -> Deployment {
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
    pub fn new(now: SystemTime) -> Arc<FakePlatform> {
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
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PlatformState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_behaviour(&self, behaviour: RollbackBehaviour) {
        self.state().behaviour = behaviour;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The targets of every rollback call, in order.
    pub fn rollbacks(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Rollback(target) => Some(target),
                _ => None,
            })
            .collect()
    }

    pub fn live(&self) -> Option<String> {
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
            Ok(self
                .state()
                .deployments
                .iter()
                .take(limit)
                .cloned()
                .collect())
        })
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Deployment, ProviderError>> {
        Box::pin(async move {
            self.call(Call::Status(id.to_string())).await;
            let mut s = self.state();
            s.polled += 1;
            let (behaviour, polled) = (s.behaviour, s.polled);
            let Some(index) = s.deployments.iter().position(|d| d.id == id) else {
                return Err(ProviderError::NotFound(id.to_string()));
            };
            if s.deployments[index].status == "DEPLOYING" {
                let next = match behaviour {
                    RollbackBehaviour::Succeed { polls } if polled >= polls => Some("SUCCESS"),
                    RollbackBehaviour::Fail => Some("FAILED"),
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
            Ok(s.deployments[index].clone())
        })
    }

    fn rollback<'a>(
        &'a self,
        target: &'a Deployment,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move {
            self.call(Call::Rollback(target.id.clone())).await;
            let mut s = self.state();
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
            Ok(Some(id))
        })
    }
}

/// A service whose health endpoints answer as scripted.
#[derive(Default)]
pub struct FakeService {
    state: Mutex<ServiceState>,
}

#[derive(Default)]
struct ServiceState {
    unhealthy: bool,
    latency: Duration,
    checks: Vec<String>,
}

impl FakeService {
    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unhealthy = unhealthy;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latency = latency;
    }

    /// The URLs asked so far.
    pub fn checks(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .checks
            .clone()
    }
}

impl HealthProbe for FakeService {
    fn get<'a>(&'a self, url: &'a str, timeout: Duration) -> BoxFuture<'a, CheckResult> {
        Box::pin(async move {
            let (unhealthy, latency) = {
                let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                s.checks.push(url.to_string());
                (s.unhealthy, s.latency)
            };
            if latency >= timeout {
                tokio::time::sleep(timeout).await;
                return CheckResult {
                    healthy: false,
                    status: None,
                    latency: timeout,
                    reason: "no answer within the timeout".into(),
                };
            }
            tokio::time::sleep(latency).await;
            CheckResult {
                healthy: !unhealthy,
                status: Some(if unhealthy { 503 } else { 200 }),
                latency,
                reason: if unhealthy {
                    "HTTP 503".into()
                } else {
                    String::new()
                },
            }
        })
    }
}

/// An engine on fakes, with its state in a temporary directory.
pub struct Rig {
    pub engine: Arc<Engine>,
    pub platform: Arc<FakePlatform>,
    pub service: Arc<FakeService>,
    /// The state directory, removed when the rig is dropped.
    _state: tempfile::TempDir,
}

/// The rig's setup: default engine config with its state in `dir`, the
/// service at a fake base URL, a short initial verification wait.
pub fn setup(dir: &std::path::Path) -> EngineSetup {
    let mut setup = EngineSetup {
        config: EngineConfig::default(),
        verify: VerifyConfig::default(),
        retention: None,
        base_url: Some("http://service.test".into()),
        db: None,
        notifiers: None,
    };
    setup.config.state_dir = dir.to_path_buf();
    setup.verify.initial_wait = Duration::from_secs(1);
    setup
}

impl Rig {
    /// Must be called inside a tokio runtime (the clock anchors to it).
    pub fn new(tweak: impl FnOnce(&mut EngineSetup)) -> Rig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut setup = setup(dir.path());
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
            _state: dir,
        }
    }

    pub fn history(&self) -> crate::history::History {
        self.engine.history().load().expect("a readable history")
    }
}
