//! What operators deploy: the Grafana dashboard (every query run against a
//! real Prometheus that scraped rollbackd through a real scenario), the
//! alerting rules about rollbackd (promtool), and the manifests.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fake_railway::FakeRailway;
use support::{free_port, wait_for, FakeService, Prometheus, Watcher};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every `expr` in the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/grafana/rollbackd-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "rollbackd");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_query_parses_and_returns_data_after_a_real_scenario() {
    let fake = Arc::new(FakeService::start());
    let railway = FakeRailway::start();
    let healed = fake.clone();
    railway.on_success(move |_| healed.set(|k| k.error_ratio = 0.0));
    let prom_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/http.yml"),
        "groups:\n  - name: http\n    interval: 1s\n    rules:\n      - name: HighErrorRate\n        \
         expr: '(sum(rate(http_requests_total{code=\"500\"}[3s])) or vector(0)) / sum(rate(http_requests_total[3s]))'\n        \
         above: 0.1\n        for: 1s\n        policy: auto\n",
    )
    .unwrap();
    // Prometheus is not up yet when rollbackd starts: its first queries fail, as they would.
    let w = Watcher::start(
        dir.path(),
        &format!(
            "[prometheus]\nurl = \"http://127.0.0.1:{prom_port}\"\ntimeout = \"1s\"\n\n[service]\nbase_url = \"{}\"\n\n\
             [watch]\nrule_paths = [\"rules\"]\n\n{}\n[blame]\nenabled = false\n\n[engine]\nstate_dir = \"state\"\npoll_interval = \"200ms\"\ncoalesce = \"500ms\"\n\n\
             [verify]\ninitial_wait = \"0s\"\nretry_interval = \"300ms\"\ncheck_timeout = \"1s\"\n\n\
             [[drills]]\nname = \"quick\"\nschedule = \"*/2 * * * * *\"\nmin_interval = \"1s\"\n",
            fake.url(),
            railway.provider_toml()
        ),
    );
    wait_for("a failed query", Duration::from_secs(10), || {
        w.metric("rollbackd_prometheus_errors_total", &[("kind", "connect")])
    });
    let prom = Prometheus::start_raw(
        prom_port,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: service\n    \
             static_configs:\n      - targets: ['{}']\n  - job_name: rollbackd\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            fake.addr, w.port
        ),
    );
    wait_for("clean evaluations", Duration::from_secs(20), || {
        w.metric("rollbackd_rule_evaluations_total", &[("outcome", "ok")])
            .filter(|v| *v >= 2.0)
    });
    // A bad deploy, rolled back; then a second breach the guards refuse.
    fake.set(|k| k.error_ratio = 0.5);
    w.wait_for_log("rollback succeeded", Duration::from_secs(40));
    w.wait_for_state("HighErrorRate", "inactive", Duration::from_secs(20));
    fake.set(|k| k.error_ratio = 0.5);
    w.wait_for_log("rollback refused by a guard", Duration::from_secs(20));
    // Let Prometheus scrape the result.
    wait_for(
        "Prometheus to scrape the refusal",
        Duration::from_secs(20),
        || {
            let r = prom.query("rollbackd_rollbacks_blocked_total{guard=\"breaker\"} > 0");
            r.as_array().is_some_and(|a| !a.is_empty()).then_some(())
        },
    );
    // The drill has run on its schedule, is in the history, and Prometheus has seen it.
    wait_for("a scraped drill run", Duration::from_secs(20), || {
        let r = prom.query("rollbackd_drill_runs_total{drill=\"quick\",result=\"passed\"} > 0");
        r.as_array().is_some_and(|a| !a.is_empty()).then_some(())
    });
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let drill = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "drill")
        .expect("a scheduled drill in the history");
    assert_eq!(drill["trigger"], "schedule");
    assert_eq!(drill["drill"]["name"], "quick");
    // Two more scrapes of rollbackd: the newest series (the drill's, the
    // refusal's) then have the two samples increase() and rate() need.
    prom.wait_for_scrapes("rollbackd", 2, Duration::from_secs(30));

    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        // Prometheus answers an unparsable query with HTTP 400, which `query` turns into a failure.
        let result = prom.query(expr);
        let has_data = result.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["value"][1].as_str().is_some_and(|v| v != "NaN"))
        });
        if !has_data {
            empty.push(format!("{title}: {expr} -> {result}"));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}

#[test]
fn the_alerting_rules_about_rollbackd_pass_promtool() {
    let promtool = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo("deploy/prometheus/rollbackd-alerts.yml"))
        .output()
        .expect("promtool is installed with the prometheus package (scripts/install-deps.sh)");
    let out = String::from_utf8_lossy(&promtool.stdout);
    assert!(
        promtool.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    // The drill and backup alerts fire when they should, and only then.
    let tested = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo("deploy/prometheus/rollbackd-alerts.test.yml"))
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let config = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(repo("deploy/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stdout)
    );
}

fn yaml_docs(path: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn the_kubernetes_example_runs_rollbackd_as_a_sidecar_with_probes() {
    let docs = yaml_docs("deploy/kubernetes/rollbackd-sidecar.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "ConfigMap", "Secret", "Deployment",]);
    let deployment = &docs[3];
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 2, "the service and rollbackd in one pod");
    // SIGTERM lets a rollback finish its phase: the largest phase budget
    // (application, 180 s) and post-rollback's (60 s) must fit.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(grace >= 240, "terminationGracePeriodSeconds is {grace}");
    let rb = containers
        .iter()
        .find(|c| c["name"] == "rollbackd")
        .unwrap();
    assert_eq!(rb["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(rb["readinessProbe"]["httpGet"]["path"], "/readyz");
    let env: Vec<&str> = rb["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"ROLLBACKD_SERVER__API_TOKEN") && env.contains(&"DATABASE_URL"));
    // The backup leaves the pod: the store's credentials come from the Secret.
    assert!(env.contains(&"AWS_ACCESS_KEY_ID") && env.contains(&"AWS_SECRET_ACCESS_KEY"));
    assert!(rb["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "rollbackd-secrets");
    // The embedded config and rules are themselves valid for rollbackd.
    let dir = tempfile::tempdir().unwrap();
    let config = docs[1]["data"]["rollbackd.toml"].as_str().unwrap();
    let rules = docs[0]["data"]["http.yml"].as_str().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/http.yml"), rules).unwrap();
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        config.replace("/etc/rollbackd/rules", "rules"),
    )
    .unwrap();
    // As in the pod, where the Secret provides DATABASE_URL (and so the state's URL).
    let (code, out, err) = support::run_rollbackd(
        dir.path(),
        &["check", "--offline"],
        &[("DATABASE_URL", "postgres://app@db.example:5432/app")],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// rollbackd as its own Railway service (it cannot be a sidecar there):
/// the config-as-code file builds the image whose state directory is the
/// volume, and the recipe's config passes `check` with the variables
/// Railway injects (RAILWAY_SERVICE_ID is rollbackd's own service).
#[test]
fn the_railway_recipe_matches_the_image_and_passes_check() {
    let railway: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/railway/railway.json")).unwrap(),
    )
    .expect("railway.json is valid JSON");
    assert_eq!(railway["build"]["builder"], "DOCKERFILE");
    assert!(repo(railway["build"]["dockerfilePath"].as_str().unwrap()).is_file());
    let deploy = &railway["deploy"];
    assert_eq!(deploy["healthcheckPath"], "/healthz");
    assert_eq!(deploy["numReplicas"], 1);
    assert!(
        deploy.get("startCommand").is_none(),
        "the image's ENTRYPOINT and CMD run watch"
    );
    let mount = deploy["requiredMountPath"].as_str().unwrap();
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("ROLLBACKD_ENGINE__STATE_DIR={mount}")));

    let config = std::fs::read_to_string(repo("deploy/railway/rollbackd.toml")).unwrap();
    assert!(config.contains(&format!("state_dir = \"{mount}\"")));
    assert!(
        config.lines().any(|l| l.starts_with("service_id = ")),
        "the application's service id, never the RAILWAY_SERVICE_ID fallback"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for entry in std::fs::read_dir(repo("rules")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("rules").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        config
            .replace("/etc/rollbackd/rules", "rules")
            .replace(mount, "state"),
    )
    .unwrap();
    let (code, out, err) = support::run_rollbackd(
        dir.path(),
        &["check", "--offline"],
        &[
            ("RAILWAY_TOKEN", "project-token"),
            ("RAILWAY_PROJECT_ID", "project"),
            ("RAILWAY_ENVIRONMENT_ID", "environment"),
            ("RAILWAY_SERVICE_ID", "rollbackd-itself"),
            (
                "DATABASE_URL",
                "postgres://app@postgres.railway.internal:5432/railway",
            ),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_compose_systemd_docker_and_grafana_files_parse() {
    let compose = &yaml_docs("deploy/docker-compose.yml")[0];
    for service in ["rollbackd", "prometheus", "grafana"] {
        assert!(compose["services"][service].is_mapping(), "{service}");
    }
    let workflow = &yaml_docs("deploy/github/rules-backtest.yml")[0];
    let steps = workflow["jobs"]["backtest"]["steps"].as_sequence().unwrap();
    assert!(
        steps.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("rules backtest rules/ --last 7d --fail-on-rollbacks"))),
        "{steps:?}"
    );
    for path in [
        "deploy/grafana/provisioning/dashboards/rollbackd.yml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ] {
        assert_eq!(
            yaml_docs(path)[0]["apiVersion"],
            serde_norway::Value::from(1),
            "{path}"
        );
    }

    let unit = std::fs::read_to_string(repo("deploy/systemd/rollbackd.service")).unwrap();
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.starts_with('[') {
            assert!(line.ends_with(']'), "{line}");
            section = line.to_string();
        } else {
            let (key, _) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line}"));
            keys.push(format!("{section}{key}"));
        }
    }
    for key in [
        "[Unit]Description",
        "[Service]ExecStart",
        "[Service]ExecReload",
        "[Service]User",
        "[Install]WantedBy",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing: {keys:?}");
    }
    assert!(unit.contains("kill -HUP $MAINPID"), "reload is SIGHUP");

    let docker = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 4, "multi-stage: {froms:?}");
    assert_eq!(
        froms[3], "FROM runtime",
        "the default target is the small image"
    );
    let user = docker
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(
        !user.contains("root") && !user.ends_with(" 0"),
        "runs as non-root: {user}"
    );
    assert!(docker.contains("--bin rollbackd") && docker.contains("COPY --from=build"));
}

#[test]
fn the_kubernetes_recipe_gives_rollbackd_the_migrations_of_the_version_it_runs_beside() {
    let docs = yaml_docs("deploy/kubernetes/rollbackd-sidecar.yaml");
    let config = docs[1]["data"]["rollbackd.toml"].as_str().unwrap();
    let working_dir = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("working_dir = "))
        .expect("[migrations] working_dir")
        .trim_matches('"');
    let pod = &docs[3]["spec"]["template"]["spec"];
    let mount = |container: &serde_norway::Value, volume: &str| -> String {
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{volume} mounted in {:?}", container["name"]))["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // The init container runs the application's image (this pod's version)
    // and copies alembic.ini and the migrations into the shared volume.
    let init = &pod["initContainers"][0];
    let app = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert_eq!(
        init["image"], app["image"],
        "the migrations of the running version"
    );
    let copied_to = mount(init, "migrations");
    let command = init["command"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    let copy = command.split("||").next().unwrap().trim_end();
    assert!(
        command.contains("alembic.ini") && copy.ends_with(&format!("{copied_to}/")),
        "{command}"
    );
    // rollbackd sees them where [migrations] runs Alembic, from its image
    // variant that has Alembic.
    let rb = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rollbackd")
        .unwrap();
    assert_eq!(mount(rb, "migrations"), working_dir);
    assert!(rb["image"].as_str().unwrap().ends_with(":alembic"));
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("AS alembic") && dockerfile.contains("pip install"));
    let volumes: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(volumes.contains(&"migrations"), "{volumes:?}");
}

#[test]
fn the_rollout_undo_recipe_rolls_a_plain_deployment_back_and_suspends_flux_first() {
    // The recipe's script against a fake kubectl and flux
    // (tests/support/fake_kubectl.py): revisions 1-3, 3 live.
    let dir = tempfile::tempdir().unwrap();
    let fake = repo("tests/support/fake_kubectl.py");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&fake, bin.join("kubectl")).unwrap();
    std::os::unix::fs::symlink(&fake, bin.join("flux")).unwrap();
    let rs = |revision: u32, image: &str, age: &str| {
        serde_json::json!({
            "metadata": {"name": format!("shop-{image}"), "creationTimestamp": age,
                         "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
                         "ownerReferences": [{"kind": "Deployment", "name": "shop", "uid": "u-1"}]},
            "spec": {"template": {"metadata": {"labels": {"app": "shop"}},
                                   "spec": {"containers": [{"name": "shop", "image": format!("registry/shop:{image}")}]}}}
        })
    };
    let state = serde_json::json!({
        "deployment": {
            "metadata": {"name": "shop", "uid": "u-1", "generation": 3,
                         "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "shop"}}},
            "status": {"observedGeneration": 3, "updatedReplicas": 2, "availableReplicas": 2}
        },
        "replicasets": [rs(1, "aaa", "2026-01-01T00:00:00Z"), rs(2, "bbb", "2026-01-02T00:00:00Z"), rs(3, "ccc", "2026-01-03T00:00:00Z")]
    });
    std::fs::write(dir.path().join("state.json"), state.to_string()).unwrap();
    let service = support::FakeService::start();
    let config = std::fs::read_to_string(repo("deploy/kubernetes/rollout-undo/rollbackd.toml"))
        .unwrap()
        .replace(
            "/etc/rollbackd/deployments.py",
            repo("deploy/kubernetes/rollout-undo/deployments.py")
                .to_str()
                .unwrap(),
        )
        .replace("/etc/rollbackd/rules", "rules")
        .replace("/var/lib/rollbackd", "state")
        .replace("http://127.0.0.1:8000", &service.url());
    std::fs::write(
        dir.path().join("rollbackd.toml"),
        format!("{config}\n[verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let state_file = dir.path().join("state.json");
    let log = dir.path().join("calls.log");
    let env = [
        ("PATH", path.as_str()),
        ("FAKE_KUBE_STATE", state_file.to_str().unwrap()),
        ("FAKE_KUBE_LOG", log.to_str().unwrap()),
        ("K8S_DEPLOYMENT", "shop"),
        ("K8S_NAMESPACE", "shop"),
        ("FLUX_KUSTOMIZATION", "shop"),
    ];
    let (code, out, err) = support::run_rollbackd(dir.path(), &["check", "--offline"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) =
        support::run_rollbackd(dir.path(), &["deployments", "list", "--json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["status"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [("3", "SUCCESS"), ("2", "REMOVED"), ("1", "REMOVED")]);
    assert_eq!(listed[0]["git_sha"], "ccc");
    let (code, out, err) = support::run_rollbackd(dir.path(), &["rollback", "--yes"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let calls = std::fs::read_to_string(&log).unwrap();
    let suspend = calls
        .find(r#"["flux", "suspend", "kustomization", "shop"]"#)
        .unwrap_or_else(|| panic!("{calls}"));
    let undo = calls
        .find(r#""rollout", "undo", "deployment/shop", "--to-revision=2"]"#)
        .unwrap_or_else(|| panic!("{calls}"));
    assert!(suspend < undo, "Flux is suspended before the undo: {calls}");
    assert_eq!(calls.matches("\"undo\"").count(), 1, "{calls}");
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/history.json")).unwrap(),
    )
    .unwrap();
    let e = &history["events"][0];
    assert_eq!(e["success"], true, "{e}");
    assert_eq!(e["target_deployment_id"], "2");
    assert_eq!(
        e["created_deployment_id"], "4",
        "the target's ReplicaSet, as revision 4"
    );
}
