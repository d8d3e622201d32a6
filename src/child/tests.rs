//! The child processes of rollbackd: groups, keepers, caps and run ids.

use super::*;

fn alive(pid: i32) -> bool {
    // A zombie is dead; anything else in /proc is alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

fn read_pid(path: &std::path::Path) -> i32 {
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} was never written", path.display());
}

#[tokio::test]
async fn commands_of_a_run_carry_its_id_and_can_be_killed_by_it() {
    let out = for_run("rb-test-env".into(), async {
        output(command("sh").args(["-c", "echo $ROLLBACKD_RUN_ID"]), None).await
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "rb-test-env");
    let outside = output(
        command("sh").args(["-c", "echo -${ROLLBACKD_RUN_ID:-}-"]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&outside.stdout).trim(), "--");

    // A process left over from a run (a command's own child), outside
    // any group rollbackd would kill.
    let id = format!("rb-left-{}", std::process::id());
    let mut left = std::process::Command::new("sleep")
        .arg("30")
        .env(RUN_ID_VAR, &id)
        .spawn()
        .unwrap();
    for _ in 0..50 {
        // /proc shows the environment once exec is done.
        if std::fs::read(format!("/proc/{}/environ", left.id()))
            .is_ok_and(|e| e.windows(id.len()).any(|w| w == id.as_bytes()))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kill_run(&id), 1);
    let status = left.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(kill_run(&id), 0);
}

#[tokio::test]
async fn a_command_runs_in_its_own_group_and_its_output_is_captured() {
    let out = output(
        command("sh").args(["-c", "echo $PPID $(ps -o pgid= -p $$)"]),
        None,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{text}");
    assert_eq!(
        ids[0], ids[1],
        "the command's keeper (its parent) leads the command's own process group"
    );
    assert_ne!(ids[0], std::process::id().to_string());
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let err = output(
        command("sh").args(["-c", &script]),
        Some(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("did not finish within"), "{err}");
    let grandchild = read_pid(&pidfile);
    for _ in 0..50 {
        if !alive(grandchild) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the command's own child {grandchild} survived the timeout");
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("background");
    let script = format!("sleep 30 >/dev/null 2>&1 & echo $! > {}", pidfile.display());
    let out = output(command("sh").args(["-c", &script]), None)
        .await
        .unwrap();
    assert!(out.status.success());
    let background = read_pid(&pidfile);
    for _ in 0..50 {
        if !alive(background) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{background} outlived the command that started it");
}

#[tokio::test]
async fn a_flood_of_log_lines_is_read_under_its_cap_and_the_command_stopped() {
    // Once: 2M lines were read whole (239 MB), a 50 MB line cost 115 MB.
    let done = lines(
        command("sh").args([
            "-c",
            "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo second; seq 1 2000000; echo never-read >&2",
        ]),
        Some(Duration::from_secs(30)),
        1000,
        64,
    )
    .await
    .unwrap();
    assert_eq!(done.read.lines.len(), 1000);
    assert_eq!(done.read.lines[0], "x".repeat(64), "cut to its cap");
    assert_eq!(done.read.long, 1);
    assert_eq!(done.read.lines[1], "second");
    assert_eq!(done.read.lines[999], "998");
    assert!(
        done.read.cut && done.status.is_none(),
        "stopped, not waited for"
    );

    let done = lines(
        command("sh").args(["-c", "printf 'a\\nb'; echo oops >&2; exit 3"]),
        None,
        1000,
        64,
    )
    .await
    .unwrap();
    assert_eq!(done.read.lines, ["a", "b"]);
    assert!(!done.read.cut);
    assert_eq!(done.status.unwrap().code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&done.stderr).trim(), "oops");
}

#[tokio::test]
async fn a_command_that_prints_without_end_is_refused_not_held_in_memory() {
    let e = output(
        command("sh").args(["-c", "head -c 80000000 /dev/zero"]),
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ChildError::TooMuch(MAX_STDOUT)), "{e}");
    assert!(e.to_string().contains("more than 64 MiB"), "{e}");
    // Its stderr is kept to its end, whatever it printed before.
    let out = output(
        command("sh").args(["-c", "head -c 1000000 /dev/zero >&2; echo last >&2"]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.stderr.len(), STDERR_TAIL);
    assert!(out.stderr.ends_with(b"last\n"));
}

#[test]
fn a_command_outlives_the_thread_that_started_it_but_not_rollbackd() {
    // rollbackd's runtime threads come and go; the parent-death signal
    // follows the thread that forked, and must not kill the command.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let child = std::thread::spawn(move || {
        let _entered = handle.enter();
        command("sh")
            .args(["-c", "sleep 0.5; echo still-here"])
            .spawn()
            .unwrap()
    })
    .join()
    .unwrap();
    // The thread that forked the keeper is gone; the command goes on.
    let out = runtime.block_on(child.wait_with_output()).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still-here");
}
