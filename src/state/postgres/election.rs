//! One replica's part in leader election: a session advisory lock, the
//! epoch bumped when it is taken, and stepping down the moment the session
//! (and so the lock) or the epoch is lost.

use std::io;
use std::time::Duration;

use super::{connect, key, pg_error, Leadership};
use crate::pg::Database;
use crate::standing::Change;

/// One replica's part in leader election.
pub(super) struct Election {
    pub(super) database: Database,
    pub(super) schema: String,
    pub(super) leadership: Leadership,
    pub(super) name: String,
    pub(super) every: Duration,
    /// The deployed service, keying a lock of its own (see
    /// [`super::PgStore::elect`]).
    pub(super) service: Option<String>,
}

impl Election {
    pub(super) async fn run(self) {
        let mut session: Option<tokio_postgres::Client> = None;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.round(&mut session).await {
                Ok(()) => self.leadership.set_reachable(true),
                Err(e) => {
                    if self.leadership.is_leader() {
                        tracing::error!(error = %e, "lost the database session that held leadership; this replica stops acting");
                    }
                    self.leadership.set_reachable(false);
                    self.leadership.follow();
                    session = None;
                }
            }
        }
    }

    /// One look: a leader checks its session is alive; a follower tries to
    /// take the lock and, when it does, bumps the epoch.
    async fn round(&self, session: &mut Option<tokio_postgres::Client>) -> io::Result<()> {
        let deadline = self.every.max(Duration::from_secs(1)) * 2;
        let work = async {
            if session.as_ref().is_none_or(|c| c.is_closed()) {
                if self.leadership.is_leader() {
                    // The lock went with the session: lead no more.
                    return Err(io::Error::other("the session holding leadership ended"));
                }
                let client = connect(&self.database, &self.schema).await?;
                // Named, so a replica under another schema can say who
                // holds this service's lock.
                client
                    .execute(
                        "SELECT set_config('application_name', $1, false)",
                        &[
                            &format!("rollbackd {} (state.schema {})", self.name, self.schema)
                                .chars()
                                .take(63)
                                .collect::<String>(),
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                *session = Some(client);
            }
            let client = session.as_ref().expect("connected");
            if self.leadership.is_leader() {
                // The session is alive, and the epoch is still ours (it moves
                // only when another session takes the lock, or by hand).
                let now: i64 = client
                    .query_one(
                        &format!("SELECT epoch FROM {}.leader WHERE id = 1", self.schema),
                        &[],
                    )
                    .await
                    .map_err(pg_error)?
                    .get(0);
                if now != self.leadership.epoch() {
                    return Err(io::Error::other(format!(
                        "the leader epoch moved on to {now}"
                    )));
                }
                return Ok(());
            }
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1)",
                    &[&key(&self.schema, "leader")],
                )
                .await
                .map_err(pg_error)?;
            if !row.get::<_, bool>(0) {
                return Ok(());
            }
            if let Some(service) = &self.service {
                if let Some(holder) = self.service_held(client, service).await? {
                    if self.leadership.set_conflict(Some(holder.clone())) != Change::Same {
                        tracing::error!(
                            service = %service,
                            holder = %holder,
                            schema = %self.schema,
                            "another rollbackd leads this service under another state.schema; this replica refuses to lead. Give every replica of one service the same [state] schema"
                        );
                    }
                    return Ok(());
                }
                if self.leadership.set_conflict(None) == Change::Cleared {
                    tracing::warn!(service = %service, "no other rollbackd leads this service any more");
                }
            }
            let epoch: i64 = client
                .query_one(
                    &format!(
                        // Never reused, even if the row is recreated or the
                        // database comes back from an older standby.
                        "UPDATE {}.leader SET epoch = GREATEST(epoch + 1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint), holder = $1, since = now() WHERE id = 1 RETURNING epoch",
                        self.schema
                    ),
                    &[&self.name],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            self.leadership.lead(epoch);
            tracing::warn!(epoch, holder = %self.name, "this replica leads: it alone acts");
            Ok(())
        };
        tokio::time::timeout(deadline, work).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "PostgreSQL did not answer in time")
        })?
    }

    /// Takes the service's lock on the session that holds the schema's.
    /// When another session holds it, gives the schema's lock back and
    /// says who holds the service's.
    async fn service_held(
        &self,
        client: &tokio_postgres::Client,
        service: &str,
    ) -> io::Result<Option<String>> {
        let service_key = key("service", service);
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&service_key])
            .await
            .map_err(pg_error)?
            .get(0);
        if taken {
            return Ok(None);
        }
        client
            .execute(
                "SELECT pg_advisory_unlock($1)",
                &[&key(&self.schema, "leader")],
            )
            .await
            .map_err(pg_error)?;
        // An advisory lock on a bigint shows in pg_locks as its two halves.
        let (high, low) = ((service_key >> 32) as u32, service_key as u32);
        let holder = client
            .query_opt(
                "SELECT a.application_name || ' (pid ' || a.pid || coalesce(' from ' || host(a.client_addr), '') || ')' \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1",
                &[&high, &low],
            )
            .await
            .map_err(pg_error)?
            .map(|row| row.get::<_, String>(0))
            .unwrap_or_else(|| "a session that just let go".into());
        Ok(Some(holder))
    }
}
