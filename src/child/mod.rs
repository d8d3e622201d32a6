//! Child processes that never outlive rollbackd: provider commands,
//! `pg_dump`, `pg_restore`, Alembic.
//!
//! Each runs in a process group of its own, so a command's own children
//! (a shell script's `curl`, `helm`'s plugins) go with it. The whole group is
//! killed when rollbackd stops waiting: on a timeout, when the run is
//! dropped (shutdown), and after the command exits (nothing it started in
//! the background lives on). When rollbackd itself dies, even by `kill -9`,
//! the kernel kills the command: a parent-death signal (`PR_SET_PDEATHSIG`,
//! SIGKILL) is set between fork and exec. Without this, a provider's
//! `rollback` command kept running after rollbackd was killed and rolled the
//! service back unrecorded.
//!
//! A parent-death signal reaches only a direct child, not what *it*
//! started (a script's `curl`). So each command runs under a keeper: the
//! process rollbackd forks leads the command's process group, forks the
//! command and stays behind ([`keep`]); when rollbackd dies, the keeper's
//! parent-death signal makes it kill the whole group, itself included.
//! What leaves the group (a `setsid` daemon) is still marked: every command
//! started during a rollback carries `ROLLBACKD_RUN_ID` in its environment,
//! and a restarted rollbackd kills whatever still carries a dead run's id
//! ([`kill_run`]) before it decides anything about that run.
//!
//! The parent-death signal fires when the *thread* that forked exits, and
//! rollbackd's runtime has several threads that come and go (a worker that
//! blocks on the state store hands its tasks to a new one). The keeper
//! tells one from the other: woken by the signal, it looks at its parent
//! process, and while that is still rollbackd it waits on (the kernel has
//! moved it to another of rollbackd's threads, whose exit signals again);
//! only when rollbackd itself is gone does it kill the group.

use std::io;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// The environment variable naming the rollback a command was started for.
pub(crate) const RUN_ID_VAR: &str = "ROLLBACKD_RUN_ID";

tokio::task_local! {
    /// The rollback the current task runs (set by the engine around a run).
    static RUN_ID: String;
}

/// Runs `f` with every command it starts marked as started for `run_id`.
pub(crate) async fn for_run<F: std::future::Future>(run_id: String, f: F) -> F::Output {
    RUN_ID.scope(run_id, f).await
}

/// A command prepared to die with rollbackd, with stdin closed and its
/// output captured.
pub(crate) fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if let Ok(id) = RUN_ID.try_with(String::clone) {
        cmd.env(RUN_ID_VAR, id);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // This process leads the command's group. It forks the command
            // and stays behind as its keeper (never returning here), so the
            // whole group dies with rollbackd.
            let keeper = libc::getpid();
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    // The command: dies with its keeper.
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::getppid() != keeper {
                        libc::_exit(127);
                    }
                    Ok(())
                }
                command => keep(command, parent),
            }
        });
    }
    cmd
}

/// The keeper of a command's process group, between rollbackd and the
/// command: it waits for the command and exits as it did; when rollbackd
/// dies (a parent-death SIGTERM, even after `kill -9`), it kills the whole
/// group, itself included, so what the command started (a script's `curl`)
/// dies too instead of acting unrecorded. Only async-signal-safe calls: it
/// runs in a fork of a multi-threaded process.
///
/// # Safety
/// Call only in a forked child, before exec.
unsafe fn keep(command: libc::pid_t, rollbackd: libc::pid_t) -> ! {
    extern "C" fn wake(_: libc::c_int) {}
    // SAFETY (whole body): plain system calls on this process's own state.
    unsafe {
        // Nothing of rollbackd's but stdio stays open here: the exec-error
        // pipe std's spawn reads to its end among them, which the command's
        // exec closes.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as *const () as libc::sighandler_t;
        // No SA_RESTART: the signal interrupts waitpid.
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        loop {
            if libc::getppid() != rollbackd {
                libc::kill(0, libc::SIGKILL);
                libc::_exit(137);
            }
            let mut status = 0;
            let r = libc::waitpid(command, &mut status, 0);
            if r == command {
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                if libc::WIFSIGNALED(status) {
                    let signal = libc::WTERMSIG(status);
                    libc::signal(signal, libc::SIG_DFL);
                    libc::kill(libc::getpid(), signal);
                    libc::_exit(128 + signal);
                }
                continue;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
    }
}

/// Why a command gave no output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    #[error("cannot start it: {0}")]
    Spawn(io::Error),
    #[error("did not finish within {}; it was killed with everything it started", crate::duration::format(*.0))]
    Timeout(Duration),
    #[error("printed more than {} MiB on stdout; it was killed with everything it started", .0 >> 20)]
    TooMuch(usize),
    #[error(transparent)]
    Wait(io::Error),
}

/// The most of a command's stdout rollbackd holds: JSON answers, a
/// `pg_restore --list`. A command that prints more is stopped and refused
/// rather than read into memory without end.
pub(crate) const MAX_STDOUT: usize = 64 << 20;
/// How much of the end of a command's stderr is kept for messages.
const STDERR_TAIL: usize = 64 << 10;

/// Runs `cmd` (made by [`command`]) to completion, or until `timeout`;
/// either way, nothing it started is left running. Its stdout is kept up
/// to [`MAX_STDOUT`], its stderr's last 64 KiB.
pub(crate) async fn output(
    cmd: &mut Command,
    timeout: Option<Duration>,
) -> Result<Output, ChildError> {
    use tokio::io::AsyncReadExt;
    let done = reading(cmd, timeout, |mut out| async move {
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = out.read(&mut chunk).await.map_err(ChildError::Wait)?;
            if n == 0 {
                return Ok((kept, true));
            }
            if kept.len() + n > MAX_STDOUT {
                return Err(ChildError::TooMuch(MAX_STDOUT));
            }
            kept.extend_from_slice(&chunk[..n]);
        }
    })
    .await?;
    Ok(Output {
        // `reading` waits for the command whenever the reader read to the end.
        status: done.status.expect("read to the end"),
        stdout: done.read,
        stderr: done.stderr,
    })
}

/// The lines a command printed, read as they come: at most `max_lines`,
/// each cut at `max_line` bytes (a 50 MB line costs 50 MB nowhere).
#[derive(Debug, Default)]
pub(crate) struct Lines {
    pub lines: Vec<String>,
    /// Lines that were cut to `max_line` bytes.
    pub long: usize,
    /// Whether the command had more to say once `max_lines` were read (it
    /// was then stopped).
    pub cut: bool,
}

/// A command whose stdout was read by a reader of rollbackd's.
#[derive(Debug)]
pub(crate) struct Finished<T> {
    pub read: T,
    /// How it exited; `None` when the reader stopped early and the command
    /// was killed.
    pub status: Option<std::process::ExitStatus>,
    /// The end of its stderr.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` and reads its stdout line by line, under a cap
/// ([`Lines`]); reaching `max_lines` stops and kills it.
pub(crate) async fn lines(
    cmd: &mut Command,
    timeout: Option<Duration>,
    max_lines: usize,
    max_line: usize,
) -> Result<Finished<Lines>, ChildError> {
    use tokio::io::AsyncReadExt;
    reading(cmd, timeout, |mut out| async move {
        let mut read = Lines::default();
        let mut line: Vec<u8> = Vec::new();
        let mut cut_here = false;
        let mut chunk = vec![0u8; 64 << 10];
        let finish = |line: &mut Vec<u8>, cut_here: &mut bool, read: &mut Lines| {
            read.lines.push(String::from_utf8_lossy(line).into_owned());
            read.long += usize::from(*cut_here);
            line.clear();
            *cut_here = false;
        };
        loop {
            let n = out.read(&mut chunk).await.map_err(ChildError::Wait)?;
            if n == 0 {
                if !line.is_empty() {
                    finish(&mut line, &mut cut_here, &mut read);
                }
                return Ok((read, true));
            }
            for piece in chunk[..n].split_inclusive(|b| *b == b'\n') {
                let (text, ends) = match piece.strip_suffix(b"\n") {
                    Some(text) => (text, true),
                    None => (piece, false),
                };
                let room = max_line.saturating_sub(line.len());
                line.extend_from_slice(&text[..text.len().min(room)]);
                cut_here |= text.len() > room;
                if ends {
                    finish(&mut line, &mut cut_here, &mut read);
                    if read.lines.len() >= max_lines {
                        read.cut = true;
                        return Ok((read, false));
                    }
                }
            }
        }
    })
    .await
}

/// Runs `cmd` (made by [`command`]) with `read` taking its stdout, and
/// keeps the end of its stderr. When `read` returns having read to the end
/// (`true`), the command is waited for; otherwise, and on a timeout or an
/// error, its whole group is killed.
async fn reading<T, F, Fut>(
    cmd: &mut Command,
    timeout: Option<Duration>,
    read: F,
) -> Result<Finished<T>, ChildError>
where
    F: FnOnce(tokio::process::ChildStdout) -> Fut,
    Fut: std::future::Future<Output = Result<(T, bool), ChildError>>,
{
    use tokio::io::AsyncReadExt;
    let mut child = cmd.spawn().map_err(ChildError::Spawn)?;
    let _group = child.id().map(|pid| Group(pid as libc::pid_t));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    enum Stop<T> {
        /// The reader stopped before the end.
        Early(T),
        Failed(ChildError),
    }
    let work = async {
        let out = async {
            let Some(out) = stdout else {
                return Err(Stop::Failed(ChildError::Wait(io::Error::other(
                    "stdout is not captured",
                ))));
            };
            match read(out).await {
                Ok((value, true)) => Ok(value),
                Ok((value, false)) => Err(Stop::Early(value)),
                Err(e) => Err(Stop::Failed(e)),
            }
        };
        let err = async {
            let mut tail = Vec::new();
            if let Some(mut err) = stderr {
                let mut chunk = vec![0u8; 8 << 10];
                loop {
                    let n = err
                        .read(&mut chunk)
                        .await
                        .map_err(|e| Stop::Failed(ChildError::Wait(e)))?;
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
            Ok(tail)
        };
        // A reader that stops early (or fails) ends the wait at once: the
        // command may be blocked on a full pipe and never close its stderr.
        match tokio::try_join!(out, err) {
            Ok((value, tail)) => {
                let status = child.wait().await.map_err(ChildError::Wait)?;
                Ok((value, Some(status), tail))
            }
            Err(Stop::Early(value)) => Ok((value, None, Vec::new())),
            Err(Stop::Failed(e)) => Err(e),
        }
    };
    let (read, status, stderr) = match timeout {
        None => work.await?,
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| ChildError::Timeout(limit))??,
    };
    Ok(Finished {
        read,
        status,
        stderr,
    })
}

/// Kills every process of this user (but this one) whose environment says
/// it was started for rollback `run_id`: what a killed rollbackd's commands
/// started and the parent-death signal did not reach. Waits (at most 2 s)
/// until they are gone. Returns how many were killed. A process that cleared
/// its environment, or runs as another user, is out of its reach.
pub(crate) fn kill_run(run_id: &str) -> usize {
    let needle = format!("{RUN_ID_VAR}={run_id}");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
    {
        // Only this user's processes can be read, and killed.
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            // SAFETY: a plain system call.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                killed.push(pid);
            }
        }
    }
    // SIGKILL is delivered at once; the process is gone (a zombie at most)
    // when its /proc entry says so.
    let gone = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with(['Z', 'X']))
        })
    };
    for _ in 0..100 {
        if killed.iter().all(gone) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed.len()
}

/// A process group, killed when dropped.
struct Group(libc::pid_t);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: a plain system call; ESRCH (the group is gone) is fine.
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
