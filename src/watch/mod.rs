//! The watcher: runs every rule group on its interval against the metrics
//! source, and reloads rule files on change or SIGHUP. A reload is
//! all-or-nothing: the new files are loaded and validated in full first; on
//! any error the running rules stay and the error is logged and counted; on
//! success unchanged rules keep their pending/firing state.
//!
//! Rules never vanish in silence: a reload that would leave no rules at all,
//! or that finds a file which held rules now empty (or without groups), is
//! a failed reload, unless `watch.allow_empty_rules` says so. Deleting a
//! file removes its rules; a dangling symlink or an unreadable file is an
//! error (`rules::files`). Files are read and parsed on a blocking thread,
//! so a slow file never stalls evaluations or the HTTP server.

mod align;
pub(crate) mod config;
pub(crate) mod evaluate;
pub(crate) mod group;
pub(crate) mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use group::{GroupContext, RuleRuntime};
pub(crate) use status::StatusBoard;

use crate::rules::{self, files::rule_files, LoadError, RuleError, RuleSet};
use crate::telemetry::events;

/// The rule files' names and a hash of each one's contents (`None` for an
/// entry that cannot be a rule file).
pub(crate) type Fingerprint = Vec<(PathBuf, Option<u64>)>;

/// Where rules come from and how to read them.
#[derive(Debug, Clone)]
pub(crate) struct RuleSource {
    pub paths: Vec<PathBuf>,
    pub variables: rules::Variables,
    pub default_interval: Duration,
    /// A reload may empty a file or leave no rules (`watch.allow_empty_rules`).
    pub allow_empty: bool,
}

impl RuleSource {
    /// `variables` are the template variables (see `Config::template_variables`).
    pub(crate) fn from_config(watch: &config::WatchConfig, variables: rules::Variables) -> Self {
        RuleSource {
            paths: watch.rule_paths.clone(),
            variables,
            default_interval: watch.evaluation_interval,
            allow_empty: watch.allow_empty_rules,
        }
    }

    pub(crate) fn load(&self) -> Result<RuleSet, LoadError> {
        rules::load_paths(&self.paths, &self.variables, self.default_interval)
    }

    /// The rules, and the files' fingerprint from just before they were
    /// read: polling compares against what was loaded, so a change made
    /// while `watch` starts is still noticed.
    pub(crate) fn load_seen(&self) -> Result<(RuleSet, Fingerprint), LoadError> {
        let seen = self.fingerprint_now();
        Ok((self.load()?, seen))
    }

    /// A cheap summary of the files' names and contents, to notice changes
    /// (read on a blocking thread).
    async fn fingerprint(&self) -> Fingerprint {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.fingerprint_now())
            .await
            .unwrap_or_default()
    }

    /// Entries that cannot be rule files count too (by their problem), so
    /// a link that starts or stops dangling is noticed without a signal.
    fn fingerprint_now(&self) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        let hash = |text: &str| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        };
        match rule_files(&self.paths) {
            Err(_) => Vec::new(),
            Ok((files, problems)) => files
                .into_iter()
                .map(|f| {
                    let text = rules::files::read(&f).ok();
                    (f, text.as_deref().map(hash))
                })
                .chain(
                    problems
                        .into_iter()
                        .map(|p| (p.file, Some(hash(&p.message)))),
                )
                .collect(),
        }
    }
}

struct RunningGroup {
    stop: watch::Sender<bool>,
    /// `None` when the group panicked (the supervisor stops rollbackd then).
    task: JoinHandle<Option<Vec<RuleRuntime>>>,
    name: String,
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReloadReason {
    Signal,
    FileChange,
}

/// The running watcher.
pub(crate) struct Watcher {
    source: RuleSource,
    ctx: GroupContext,
    groups: Vec<RunningGroup>,
    /// The rule set running now (to notice rules that vanish).
    current: RuleSet,
}

impl Watcher {
    /// Starts every group of `initial`.
    pub(crate) fn start(source: RuleSource, initial: RuleSet, ctx: GroupContext) -> Self {
        if initial.rule_count() == 0 {
            tracing::warn!(paths = ?source.paths, "no rules loaded: rollbackd watches nothing until rule files appear");
        }
        let mut watcher = Watcher {
            source,
            ctx,
            groups: Vec::new(),
            current: initial.clone(),
        };
        events::rules_loaded(initial.groups.len(), initial.rule_count(), true);
        watcher.spawn(initial, BTreeMap::new());
        watcher
    }

    fn spawn(&mut self, set: RuleSet, mut carried: BTreeMap<(String, String), RuleRuntime>) {
        let mut keep_groups = BTreeSet::new();
        for group in set.groups {
            keep_groups.insert(group.name.clone());
            let runtimes: Vec<RuleRuntime> = group
                .rules
                .iter()
                .map(
                    |rule| match carried.remove(&(group.name.clone(), rule.name.clone())) {
                        Some(mut old) if old.rule.evaluates_like(rule) => {
                            old.rule = rule.clone();
                            old
                        }
                        _ => RuleRuntime::new(rule.clone()),
                    },
                )
                .collect();
            let (stop, stop_rx) = watch::channel(false);
            let name = group.name.clone();
            let shared = self
                .ctx
                .board
                .register_group(&group.name, group.interval, runtimes);
            crate::telemetry::events::incident_group(&group.name);
            let task = crate::supervise::global().spawn(
                format!("rule group {name}"),
                group::run(group, shared, self.ctx.clone(), stop_rx),
            );
            self.groups.push(RunningGroup { stop, task, name });
        }
        self.ctx.board.retain(&keep_groups);
    }

    /// Stops every group and returns their rules with state. Cut short (a
    /// stop during a reload), the groups not yet joined stay listed, for
    /// the next call to join.
    async fn stop_all(&mut self) -> BTreeMap<(String, String), RuleRuntime> {
        let mut carried = BTreeMap::new();
        for running in &self.groups {
            let _ = running.stop.send(true);
        }
        while let Some(first) = self.groups.first_mut() {
            let joined = (&mut first.task).await;
            let running = self.groups.remove(0);
            match joined {
                Ok(Some(runtimes)) => {
                    for rt in runtimes {
                        carried.insert((running.name.clone(), rt.rule.name.clone()), rt);
                    }
                }
                Ok(None) => {
                    tracing::error!(group = %running.name, "group task panicked; its state is lost")
                }
                Err(e) => {
                    tracing::error!(group = %running.name, error = %e, "group task ended abnormally; its state is lost")
                }
            }
        }
        carried
    }

    /// Loads the rule files again; keeps the running rules on any error.
    pub(crate) async fn reload(&mut self, reason: ReloadReason) -> Result<(), LoadError> {
        tracing::info!(?reason, "reloading rules");
        let source = self.source.clone();
        let loaded = match tokio::task::spawn_blocking(move || source.load()).await {
            Ok(loaded) => loaded.and_then(|set| self.no_rules_lost(set)),
            Err(e) => Err(LoadError::Invalid(vec![RuleError {
                file: PathBuf::from("(rule files)"),
                group: None,
                rule: None,
                message: format!("loading ended abnormally: {e}"),
            }])),
        };
        match loaded {
            Err(e) => {
                events::reload_failed(&e.to_string());
                Err(e)
            }
            Ok(set) => {
                let (groups, count) = (set.groups.len(), set.rule_count());
                self.current = set.clone();
                let carried = self.stop_all().await;
                self.spawn(set, carried);
                events::rules_loaded(groups, count, false);
                Ok(())
            }
        }
    }

    /// Refuses `set` when it empties a file that held rules, or leaves none
    /// where there were some (unless `watch.allow_empty_rules`).
    fn no_rules_lost(&self, set: RuleSet) -> Result<RuleSet, LoadError> {
        if self.source.allow_empty {
            return Ok(set);
        }
        let mut problems: Vec<RuleError> = set
            .emptied_since(&self.current)
            .into_iter()
            .map(|file| RuleError {
                file,
                group: None,
                rule: None,
                message: "held rules and is now empty (or has no groups); the running rules are kept. Delete the file to remove its rules, or set watch.allow_empty_rules = true".into(),
            })
            .collect();
        if problems.is_empty() && set.rule_count() == 0 && self.current.rule_count() > 0 {
            problems.push(RuleError {
                file: self.source.paths.first().cloned().unwrap_or_default(),
                group: None,
                rule: None,
                message: format!(
                    "the rule paths now hold no rules (there were {}); the running rules are kept. Set watch.allow_empty_rules = true to allow an empty rule set",
                    self.current.rule_count()
                ),
            });
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(LoadError::Invalid(problems))
        }
    }

    /// Runs until `shutdown` resolves: reloads on `hangup` (SIGHUP, caught
    /// by the caller from its start) and, every `poll` (unless zero), when
    /// the rule files changed from `seen` (as the running rules were read).
    pub(crate) async fn run_until(
        mut self,
        poll: Duration,
        seen: Fingerprint,
        mut hangup: tokio::signal::unix::Signal,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut last_seen = seen;
        let mut ticker = tokio::time::interval(if poll.is_zero() {
            Duration::from_secs(3600)
        } else {
            poll
        });
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker.tick().await;
        tokio::pin!(shutdown);
        loop {
            let reason = tokio::select! {
                _ = &mut shutdown => break,
                _ = hangup.recv() => ReloadReason::Signal,
                _ = ticker.tick(), if !poll.is_zero() => ReloadReason::FileChange,
            };
            // A slow read or parse never holds up a stop: the stop wins,
            // and a reload cut short keeps the running rules.
            let work = async {
                let now = self.source.fingerprint().await;
                if matches!(reason, ReloadReason::Signal) || now != last_seen {
                    last_seen = now;
                    let _ = self.reload(reason).await;
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = work => {}
            }
        }
        self.stop_all().await;
        Ok(())
    }
}
