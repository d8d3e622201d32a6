//! The state in PostgreSQL (`[state] backend = "postgres"`), shared by the
//! rollbackd beside every replica of a service.
//!
//! - Documents live in `<schema>.documents` (name, body), the same JSON the
//!   state directory holds, so the history keeps the seed's format.
//! - The rollback lock is a session advisory lock held on a connection of
//!   its own, released when the lock is dropped or the session dies.
//! - Leadership ([`Leadership`]) is a session advisory lock too, taken by
//!   one replica; taking it bumps `<schema>.leader.epoch`. A daemon's writes
//!   are **fenced**: each runs in a transaction that share-locks the leader
//!   row and commits only while the epoch is the one this process was given
//!   when it became leader. Once another replica has taken over, a deposed
//!   leader can write nothing, so it can journal no step, and a rollback step
//!   is taken only after it was journaled: a run started under epoch N never
//!   asks the platform once the epoch has moved on.
//! - Tables are created and upgraded by rollbackd (versioned in
//!   `<schema>.meta`) under a transaction advisory lock, so replicas starting
//!   at once do it once.
//!
//! The stores call it synchronously (they are read and written whole and
//! rarely); the connections live on a thread of their own with its own
//! runtime, and every call has a deadline.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use tokio::sync::mpsc;

mod election;
mod leadership;
mod schema;

use election::Election;
pub use leadership::Leadership;
use schema::ensure_schema;

use super::file::StateLock;
use super::store::StateStore;
use super::StateError;
use crate::pg::Database;

/// How long a call waits for PostgreSQL before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes are not fenced (the CLI: it holds the rollback lock).
pub(super) const UNFENCED: i64 = i64::MIN;
/// A daemon that is not the leader: every write is refused.
pub(super) const FOLLOWER: i64 = -1;

enum Request {
    Read(String, std_mpsc::Sender<io::Result<Vec<u8>>>),
    Write(String, Vec<u8>, i64, std_mpsc::Sender<io::Result<()>>),
    Remove(String, i64, std_mpsc::Sender<io::Result<()>>),
    List(String, std_mpsc::Sender<io::Result<Vec<String>>>),
    /// The rollback lock; not taken once the caller's deadline has passed.
    Lock(
        std::time::Instant,
        std_mpsc::Sender<io::Result<Option<u64>>>,
    ),
    Unlock(u64),
    Elect(Leadership, String, Duration, Option<String>),
}

/// The PostgreSQL backend.
#[derive(Debug)]
pub struct PgStore {
    tx: mpsc::UnboundedSender<Request>,
    schema: String,
    target: String,
    /// [`UNFENCED`], [`FOLLOWER`] or the leader's epoch.
    epoch: Arc<AtomicI64>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

/// The advisory lock keys of a schema: one rollbackd deployment per schema.
fn key(schema: &str, what: &str) -> i64 {
    // FNV-1a: stable across versions and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("rollbackd:{schema}:{what}").bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

impl PgStore {
    /// Connects lazily: nothing fails here; the first call says what is wrong.
    pub fn new(database: Database, schema: &str) -> PgStore {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            database: database.clone(),
            schema: schema.to_string(),
            client: None,
            locks: HashMap::new(),
            next_lock: 0,
        };
        // A panic in the worker would leave every state call unanswered:
        // it stops `watch` instead (see `supervise`).
        crate::supervise::global()
            .thread("state store", move || worker.run(rx))
            .expect("a thread for the state store");
        PgStore {
            tx,
            schema: schema.to_string(),
            target: database.target.clone(),
            epoch: Arc::new(AtomicI64::new(UNFENCED)),
        }
    }

    /// Takes part in leader election (a daemon): from now on this process
    /// writes only while it leads, under its epoch. `name` says who leads.
    /// `service` names the deployed service (the platform's id for it): a
    /// second lock, keyed by it alone, keeps replicas of one service that
    /// were given different `state.schema`s from both leading.
    pub fn elect(&self, name: &str, check_every: Duration, service: Option<&str>) -> Leadership {
        let leadership = Leadership::fenced_by(self.epoch.clone());
        let _ = self.tx.send(Request::Elect(
            leadership.clone(),
            name.to_string(),
            check_every,
            service.map(str::to_string),
        ));
        leadership
    }

    fn call<T>(
        &self,
        make: impl FnOnce(std_mpsc::Sender<io::Result<T>>) -> Request,
    ) -> io::Result<T> {
        let (reply, answer) = std_mpsc::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| io::Error::other("the state store's connection thread is gone"))?;
        off_the_runtime(|| answer.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1))).map_err(
            |_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("PostgreSQL at {} did not answer in time", self.target),
                )
            },
        )?
    }
}

impl StateStore for PgStore {
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.call(|r| Request::Read(name.to_string(), r))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        // An operator's answer handed over by a follower is a request to the
        // leader, not a change: it is the one write a follower makes.
        let epoch = if name.starts_with("requests/") {
            UNFENCED
        } else {
            self.epoch.load(Ordering::SeqCst)
        };
        self.call(|r| Request::Write(name.to_string(), bytes.to_vec(), epoch, r))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.call(|r| Request::Remove(name.to_string(), epoch, r))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.call(|r| Request::List(dir.to_string(), r))
    }

    fn location(&self, name: &str) -> PathBuf {
        PathBuf::from(format!(
            "postgres://{}/{}.documents/{name}",
            self.target, self.schema
        ))
    }

    fn try_lock(&self) -> io::Result<Option<StateLock>> {
        // The caller waits CALL_TIMEOUT + 1 s; a lock taken later would be
        // held by nobody, so the worker gives up at CALL_TIMEOUT.
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        let id = self.call(|reply| Request::Lock(deadline, reply))?;
        Ok(id.map(|id| {
            StateLock::held(
                PgLock {
                    id,
                    tx: self.tx.clone(),
                },
                self.location("rollback.lock"),
            )
        }))
    }
}

/// A held rollback lock: its session closes when dropped.
struct PgLock {
    id: u64,
    tx: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgLock({})", self.id)
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Unlock(self.id));
    }
}

struct Worker {
    database: Database,
    schema: String,
    client: Option<tokio_postgres::Client>,
    /// Sessions holding the rollback lock.
    /// Sessions holding the rollback lock, with their backend pid.
    locks: HashMap<u64, (tokio_postgres::Client, i32)>,
    next_lock: u64,
}

/// Runs `wait` (a wait for the connection thread's answer, up to
/// `CALL_TIMEOUT`) without holding up the async runtime: on the daemon's
/// multi-threaded runtime the waiting thread hands its other tasks
/// (`/healthz`, the API, the rule groups) to another thread first, so a
/// PostgreSQL that hangs stalls only the caller. Elsewhere (the CLI's
/// runtime, tests without one) it simply waits.
fn off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// A statement's error; a session that is gone (PostgreSQL stopped or the
/// connection broke) is NotConnected: the store cannot be reached, which
/// callers tell apart from a document that is wrong.
fn pg_error(e: tokio_postgres::Error) -> io::Error {
    let gone = e.is_closed()
        || std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<io::Error>().is_some());
    match gone {
        true => io::Error::new(io::ErrorKind::NotConnected, e.to_string()),
        false => io::Error::other(e.to_string()),
    }
}

fn fenced(epoch: i64) -> io::Error {
    match epoch {
        FOLLOWER => StateError::NotLeader.into(),
        epoch => StateError::Fenced { epoch }.into(),
    }
}

impl Worker {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the state store's runtime");
                return;
            }
        };
        runtime.block_on(async move {
            while let Some(request) = rx.recv().await {
                self.handle(request).await;
            }
        });
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Read(name, reply) => {
                let result = within(self.read(name)).await;
                let _ = reply.send(self.settled(result));
            }
            Request::Write(name, bytes, epoch, reply) => {
                let result = within(self.write(name, bytes, epoch)).await;
                let _ = reply.send(self.settled(result));
            }
            Request::Remove(name, epoch, reply) => {
                let result = within(self.remove(name, epoch)).await;
                let _ = reply.send(self.settled(result));
            }
            Request::List(dir, reply) => {
                let result = within(self.list(dir)).await;
                let _ = reply.send(self.settled(result));
            }
            Request::Lock(deadline, reply) => {
                let result = within(self.lock(deadline)).await;
                let _ = reply.send(self.settled(result));
            }
            Request::Unlock(id) => {
                // Closing the session releases its advisory lock.
                self.locks.remove(&id);
            }
            Request::Elect(leadership, name, every, service) => {
                let election = Election {
                    database: self.database.clone(),
                    schema: self.schema.clone(),
                    leadership,
                    name,
                    every,
                    service,
                };
                crate::supervise::global().spawn_forever("leader election", election.run());
            }
        }
    }

    /// After a failed call the session may be broken, or mid-transaction:
    /// the next call opens a new one. (A document that does not exist, or a
    /// fenced write, leaves it fine.)
    fn settled<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if e.kind() != io::ErrorKind::NotFound && StateError::of(e).is_none() {
                self.client = None;
            }
        }
        result
    }

    /// The session, connected (and the tables made) if needed.
    async fn session(&mut self) -> io::Result<&mut tokio_postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.database, &self.schema).await?);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    async fn read(&mut self, name: String) -> io::Result<Vec<u8>> {
        let sql = format!("SELECT body FROM {}.documents WHERE name = $1", self.schema);
        let row = self
            .session()
            .await?
            .query_opt(&sql, &[&name])
            .await
            .map_err(pg_error)?;
        row.map(|r| r.get(0))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no document {name}")))
    }

    async fn write(&mut self, name: String, bytes: Vec<u8>, epoch: i64) -> io::Result<()> {
        let schema = self.schema.clone();
        // A run journals each step before taking it, holding the rollback
        // lock: if that lock's session died (PostgreSQL restarted, an idle
        // timeout), another run may hold it now, and this one must stop.
        let holders: Vec<i32> = if name.starts_with("runs/") {
            self.locks.values().map(|(_, pid)| *pid).collect()
        } else {
            Vec::new()
        };
        let client = self.session().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        check_epoch(&tx, &schema, epoch).await?;
        if name.starts_with("runs/") && !holders.is_empty() {
            let held: i64 = tx
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ANY($1)",
                    &[&holders],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if held == 0 {
                return Err(StateError::LockLost.into());
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {schema}.documents (name, body, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body, updated_at = now()"
            ),
            &[&name, &bytes],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn remove(&mut self, name: String, epoch: i64) -> io::Result<()> {
        let schema = self.schema.clone();
        let client = self.session().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        check_epoch(&tx, &schema, epoch).await?;
        let removed = tx
            .execute(
                &format!("DELETE FROM {schema}.documents WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        if removed == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no document {name}"),
            ));
        }
        Ok(())
    }

    async fn list(&mut self, dir: String) -> io::Result<Vec<String>> {
        let sql = format!(
            "SELECT name FROM {}.documents WHERE starts_with(name, $1) ORDER BY name",
            self.schema
        );
        let rows = self
            .session()
            .await?
            .query(&sql, &[&format!("{dir}/")])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The rollback lock, on a session of its own.
    async fn lock(&mut self, deadline: std::time::Instant) -> io::Result<Option<u64>> {
        let client = connect(&self.database, &self.schema).await?;
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock($1)",
                &[&key(&self.schema, "rollback")],
            )
            .await
            .map_err(pg_error)?;
        if !row.get::<_, bool>(0) {
            return Ok(None);
        }
        if std::time::Instant::now() >= deadline {
            // The caller gave up: dropping the session releases the lock.
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "took the rollback lock too late for the caller; released it",
            ));
        }
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        self.next_lock += 1;
        self.locks.insert(self.next_lock, (client, pid));
        Ok(Some(self.next_lock))
    }
}

/// In a write's transaction: the leader row, share-locked (so leadership
/// cannot move until the write commits), must still carry this process's
/// epoch.
async fn check_epoch(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    epoch: i64,
) -> io::Result<()> {
    if epoch == UNFENCED {
        return Ok(());
    }
    if epoch == FOLLOWER {
        return Err(fenced(epoch));
    }
    let now: i64 = tx
        .query_one(
            &format!("SELECT epoch FROM {schema}.leader WHERE id = 1 FOR SHARE"),
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if now != epoch {
        return Err(fenced(epoch));
    }
    Ok(())
}

/// `call`, or a timeout error once [`CALL_TIMEOUT`] has passed.
async fn within<T>(call: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "PostgreSQL did not answer in time",
            ))
        })
}

/// A session, with the tables rollbackd needs. PostgreSQL is asked to
/// notice a vanished client about as fast as the client notices it, so the
/// advisory locks of a partitioned leader go in about 10 s, not the server's
/// default of hours.
async fn connect(database: &Database, schema: &str) -> io::Result<tokio_postgres::Client> {
    // NotConnected: the store cannot be reached, which callers tell apart
    // from a document that is wrong.
    let mut client = database
        .connect(CALL_TIMEOUT)
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))?;
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
             SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000",
        )
        .await
        .map_err(pg_error)?;
    ensure_schema(&mut client, schema).await?;
    Ok(client)
}
