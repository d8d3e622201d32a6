//! `[gitops]` against a real git repository (a bare repository on disk,
//! pushed to and read with the `git` command) and a fake of GitHub's REST
//! API (`tests/support/fake_github.rs`, which cites what it reproduces).
//! The rollbacks are Argo CD's (the fake Argo CD's history carries the
//! repository's commits): the pull request's branch holds exactly the
//! revert of the bad commits; the image-tag mode changes only that value; a
//! revert that conflicts opens nothing and says so; asked again for the
//! same rollback, the pull request already open is found, not doubled;
//! `check` names a refused token.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::fake_argocd::{self, FakeArgocd};
use support::fake_github::{FakeGithub, OWNER, REPO, TOKEN};
use support::{run_rollbackd, FakeService};

/// `git` in `dir`, as a person on the team would run it; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e} (install git: apt-get install git)"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

const DEPLOYMENT: &str = "kind: Deployment\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: shop\n        env:\n        - name: POOL_SIZE\n          value: \"POOL\"\n";

/// The configuration repository: `prod/kustomization.yaml` (the image tag)
/// and `prod/deployment.yaml`. History 0 is tag v1; history 1, the good
/// deploy, tag v2; the bad deploy is two commits (tag v3, then a pool of
/// 2). Then `after` lands on main: someone's later commit.
struct ConfigRepo {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    /// History 0, 1 (good) and 2 (bad).
    revisions: [String; 3],
}

fn commit(work: &Path, tag: &str, pool: &str, message: &str) -> String {
    std::fs::write(
        work.join("prod/kustomization.yaml"),
        format!("images:\n- name: ghcr.io/acme/shop\n  newTag: {tag} # set by CI\n"),
    )
    .unwrap();
    std::fs::write(
        work.join("prod/deployment.yaml"),
        DEPLOYMENT.replace("POOL", pool),
    )
    .unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["rev-parse", "HEAD"])
}

fn config_repo(after: impl FnOnce(&Path)) -> ConfigRepo {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("shop-deploy.git");
    let work = dir.path().join("work");
    git(
        dir.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &bare.to_string_lossy(),
        ],
    );
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            &bare.to_string_lossy(),
            &work.to_string_lossy(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir(work.join("prod")).unwrap();
    let first = commit(&work, "v1", "10", "shop v1");
    let good = commit(&work, "v2", "10", "shop v2");
    commit(&work, "v3", "10", "shop v3");
    let bad = commit(&work, "v3", "2", "smaller database pool");
    after(&work);
    git(&work, &["push", "-q", "origin", "main"]);
    ConfigRepo {
        _dir: dir,
        bare,
        revisions: [first, good, bad],
    }
}

/// An unrelated later commit on main.
fn readme(work: &Path) {
    std::fs::write(work.join("README.md"), "The shop's deploy configuration.\n").unwrap();
    git(work, &["add", "README.md"]);
    git(work, &["commit", "-q", "-m", "docs"]);
}

struct Setup {
    repo: ConfigRepo,
    github: FakeGithub,
    _argo: FakeArgocd,
    _service: FakeService,
    dir: tempfile::TempDir,
}

fn setup(after: impl FnOnce(&Path), gitops: &str) -> Setup {
    let repo = config_repo(after);
    let github = FakeGithub::start(&repo.bare);
    let argo = FakeArgocd::start();
    let revs = &repo.revisions;
    argo.set_revisions([&revs[0], &revs[1], &revs[2]]);
    let service = FakeService::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!(
            "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\
             [watch]\nallow_empty_rules = true\n\n\
             [gitops]\nrepository = \"{}\"\ngithub_repo = \"{OWNER}/{REPO}\"\napi = \"{}\"\n\
             link = \"https://rollbackd.shop.internal\"\n{gitops}\n",
            service.url(),
            argo.provider_toml(fake_argocd::TOKEN),
            repo.bare.display(),
            github.api(),
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    Setup {
        repo,
        github,
        _argo: argo,
        _service: service,
        dir,
    }
}

fn rollback(s: &Setup) -> (String, Value) {
    let (code, out, err) = run_rollbackd(
        s.dir.path(),
        &[
            "rollback",
            "--yes",
            "--reason",
            "error rate 12 % after deploy",
        ],
        &[("GITHUB_TOKEN", TOKEN)],
    );
    assert_eq!(
        code, 0,
        "the rollback itself succeeds whatever git says\n{out}{err}"
    );
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    (out, history["events"][0].clone())
}

fn branches(bare: &Path) -> Vec<String> {
    git(
        bare,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn a_verified_rollback_opens_one_pull_request_that_reverts_exactly_the_bad_commits() {
    let s = setup(readme, "");
    let (out, e) = rollback(&s);
    let id = e["id"].as_str().unwrap();
    let branch = format!("rollbackd/rollback-{id}");
    let pulls = s.github.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pr = &pulls[0];
    assert_eq!(
        (pr["head"]["ref"].as_str(), pr["base"]["ref"].as_str()),
        (Some(branch.as_str()), Some("main"))
    );
    assert_eq!(e["revert"]["result"], "opened", "{e}");
    assert_eq!(e["revert"]["url"], pr["html_url"]);
    assert!(
        out.contains(&format!(
            "git: pull request {}",
            pr["html_url"].as_str().unwrap()
        )),
        "{out}"
    );

    // The branch is main plus one commit whose change is exactly the bad
    // range taken back: the diff main..branch is the diff bad..good.
    let [_, good, bad] = &s.repo.revisions;
    assert_eq!(
        git(&s.repo.bare, &["rev-parse", &format!("{branch}^")]),
        git(&s.repo.bare, &["rev-parse", "main"])
    );
    assert_eq!(
        git(&s.repo.bare, &["diff", "main", &branch]),
        git(&s.repo.bare, &["diff", bad, good]),
    );
    assert_eq!(
        git(&s.repo.bare, &["show", &format!("{branch}:README.md")]),
        "The shop's deploy configuration.",
        "later work stays"
    );
    let message = git(
        &s.repo.bare,
        &["log", "-1", "--format=%an <%ae>%n%B", &branch],
    );
    assert!(
        message.starts_with("rollbackd <rollbackd@localhost>\nRevert "),
        "{message}"
    );
    assert!(
        message.contains("reverts 2 commit(s)") && message.contains("smaller database pool"),
        "{message}"
    );

    // The body holds the incident: the reason, the timeline, the history link.
    let body = pr["body"].as_str().unwrap();
    for part in [
        "error rate 12 % after deploy",
        "### Timeline",
        "| application | succeeded |",
        &format!("rollbackd history --show {id}"),
        &format!("https://rollbackd.shop.internal/api/v1/rollbacks/{id}"),
        "reverts 2 commit(s)",
    ] {
        assert!(
            body.contains(part),
            "{part:?} missing from the body:\n{body}"
        );
    }
    assert!(
        !body.contains(TOKEN) && !out.contains(TOKEN),
        "the token is never shown"
    );
    let (code, shown, _) = run_rollbackd(s.dir.path(), &["history", "--show", id], &[]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("git: pull request https://github.com/acme/shop-deploy/pull/1"),
        "{shown}"
    );
    assert!(
        !s.dir.path().join("state/gitops").join(id).exists(),
        "the clone is removed"
    );
}

#[test]
fn the_image_tag_mode_changes_only_that_value_even_where_a_revert_would_conflict() {
    // A later commit changed the pool line again: a revert would conflict,
    // the tag alone does not.
    let s = setup(
        |work| {
            commit(work, "v3", "3", "pool of 3");
        },
        "mode = \"image_tag\"\nimage_tag = { file = \"prod/kustomization.yaml\", key = \"newTag\" }\n",
    );
    let (_, e) = rollback(&s);
    assert_eq!(e["revert"]["result"], "opened", "{e}");
    let branch = format!("rollbackd/rollback-{}", e["id"].as_str().unwrap());
    assert_eq!(
        git(&s.repo.bare, &["diff", "--stat", "main", &branch]),
        " prod/kustomization.yaml | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)"
    );
    assert_eq!(
        git(
            &s.repo.bare,
            &["show", &format!("{branch}:prod/kustomization.yaml")]
        ),
        "images:\n- name: ghcr.io/acme/shop\n  newTag: v2 # set by CI",
        "the value the good deploy's revision held; the comment stays"
    );
    let title = s.github.pulls()[0]["title"].as_str().unwrap().to_string();
    assert_eq!(title, "Set newTag back to v2: rolled back by rollbackd");
}

#[test]
fn a_revert_that_conflicts_opens_nothing_and_says_so() {
    let s = setup(
        |work| {
            commit(work, "v3", "3", "pool of 3");
        },
        "",
    );
    let (out, e) = rollback(&s);
    assert_eq!(e["success"], true, "the rollback stands: {e}");
    assert_eq!(e["revert"]["result"], "conflict", "{e}");
    let detail = e["revert"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("does not apply cleanly onto main"),
        "{detail}"
    );
    assert!(
        detail.contains("prod/deployment.yaml"),
        "names the file: {detail}"
    );
    assert!(out.contains("git: NO pull request"), "{out}");
    assert!(s.github.posts().is_empty(), "nothing asked of GitHub");
    assert_eq!(branches(&s.repo.bare), ["main"], "nothing pushed");
}

#[test]
fn asked_again_for_the_same_rollback_the_open_pull_request_is_found_not_doubled() {
    use rollbackd::gitops::{Gitops, Incident, RevertResult};
    let s = setup(readme, "");
    let (_, e) = rollback(&s);
    let id = e["id"].as_str().unwrap();
    let config =
        rollbackd::config::Config::load(Some(&s.dir.path().join("rollbackd.toml"))).unwrap();
    let mut section = config.gitops.unwrap();
    section.token = Some(rollbackd::secret::Secret::new(TOKEN));
    let gitops = Gitops::new(&section, &s.dir.path().join("state")).unwrap();
    let deployment = |i: usize| rollbackd::provider::Deployment {
        id: i.to_string(),
        status: "SUCCESS".into(),
        created_at: std::time::SystemTime::now(),
        git_sha: Some(s.repo.revisions[i].clone()),
        git_branch: None,
        can_rollback: None,
    };
    let (from, target) = (deployment(2), deployment(1));
    let event: rollbackd::history::Event = serde_json::from_value(e.clone()).unwrap();
    let again = support::block_on(gitops.propose(&Incident {
        rollback_id: id,
        from: &from,
        target: &target,
        event: &event,
    }));
    assert_eq!(again.result, RevertResult::Opened, "{again:?}");
    assert_eq!(
        Some(again.url.as_deref().unwrap()),
        e["revert"]["url"].as_str()
    );
    assert_eq!(s.github.pulls().len(), 1, "one pull request per rollback");
    assert_eq!(
        s.github.posts().len(),
        2,
        "asked twice, refused as existing the second time"
    );
    assert_eq!(branches(&s.repo.bare).len(), 2, "main and the one branch");
}

#[test]
fn check_names_a_refused_token_and_one_that_may_not_push() {
    let s = setup(readme, "");
    let (code, out, err) = run_rollbackd(s.dir.path(), &["check"], &[("GITHUB_TOKEN", TOKEN)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("gitops OK: "), "{out}");
    let (code, out, err) =
        run_rollbackd(s.dir.path(), &["check"], &[("GITHUB_TOKEN", "ghp_wrong")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("GitHub refused the token (401 Bad credentials)"),
        "{err}"
    );
    assert!(
        err.contains("contents: write and pull requests: write on acme/shop-deploy"),
        "{err}"
    );
    assert!(
        !err.contains("ghp_wrong") && !out.contains("ghp_wrong"),
        "never shown"
    );
    s.github.set_may_push(false);
    let (code, _, err) = run_rollbackd(s.dir.path(), &["check"], &[("GITHUB_TOKEN", TOKEN)]);
    assert_eq!(code, 1);
    assert!(err.contains("may not push to it"), "{err}");
    // No token at all is a configuration error (exit 2), named before anything runs.
    let (code, _, err) = run_rollbackd(s.dir.path(), &["check"], &[("GITHUB_TOKEN", "")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no GitHub token: set gitops.token, gitops.token_file or GITHUB_TOKEN"),
        "{err}"
    );
}
