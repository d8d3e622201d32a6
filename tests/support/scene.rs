//! What a rollback from the CLI runs against: a fake Railway, the fake
//! service, and a directory whose rollbackd.toml points at both and at a
//! PostgreSQL cluster. Shared by the database and backup-store tests.

use std::path::Path;

use serde_json::Value;

use super::fake_railway::FakeRailway;
use super::postgres::{database_toml, Postgres};
use super::{run_rollbackd, seed_revisions, FakeService};

pub struct Scene {
    pub railway: FakeRailway,
    _service: FakeService,
    pub dir: tempfile::TempDir,
}

impl Scene {
    /// `db_extra` goes into `[database]`, `engine_extra` after `[engine]`.
    pub fn new(pg: &Postgres, db_extra: &str, engine_extra: &str) -> Scene {
        let railway = FakeRailway::start();
        let service = FakeService::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rollbackd.toml"),
            format!(
                "[service]\nbase_url = \"{}\"\n\n{}\n[engine]\nstate_dir = \"state\"\npoll_interval = \"100ms\"\n{engine_extra}\n\n\
                 [verify]\ninitial_wait = \"0s\"\nretry_interval = \"200ms\"\ncheck_timeout = \"1s\"\n\n{}",
                service.url(),
                railway.provider_toml(),
                database_toml(pg, db_extra)
            ),
        )
        .unwrap();
        Scene {
            railway,
            _service: service,
            dir,
        }
    }

    /// With the revisions rollbackd would have recorded (`seed_revisions`).
    pub fn seeded(self, pairs: &[(&str, &str)]) -> Scene {
        seed_revisions(self.path(), pairs);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites rollbackd.toml with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let config = self.path().join("rollbackd.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, edit(text)).unwrap();
    }

    pub fn rollback(&self) -> (i32, String, String) {
        self.rollback_with(&[])
    }

    /// `rollback --yes` with `env`.
    pub fn rollback_with(&self, env: &[(&str, &str)]) -> (i32, String, String) {
        run_rollbackd(self.path(), &["rollback", "--yes", "--reason", "test"], env)
    }

    /// The history's first event.
    pub fn event(&self) -> Value {
        history(self.path())["events"][0].clone()
    }
}

/// The history file in the state directory under `dir`.
pub fn history(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state/history.json")).unwrap()).unwrap()
}

/// The phase called `name` of a history event.
pub fn phase<'a>(event: &'a Value, name: &str) -> &'a Value {
    event["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}
