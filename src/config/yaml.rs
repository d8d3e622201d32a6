//! A figment provider for YAML config files, parsed with serde_norway.
//!
//! It exists so that config loading needs no YAML support from figment
//! itself. It must keep naming the file: its metadata carries
//! `Source::File`, which is how error messages say where a bad key was.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Error, Metadata, Profile, Provider, Source};

/// One YAML file, read when figment asks for its data.
pub(super) struct YamlFile {
    path: PathBuf,
}

impl YamlFile {
    pub(super) fn new(path: &Path) -> Self {
        YamlFile {
            path: path.to_path_buf(),
        }
    }
}

impl Provider for YamlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("YAML file", Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Error::from(format!("cannot read the file: {e}")))?;
        // An empty file (or one of comments only) is an empty config, as
        // with TOML, not a type error.
        let dict: Option<Dict> =
            serde_norway::from_str(&text).map_err(|e| Error::from(e.to_string()))?;
        Ok(Profile::Default.collect(dict.unwrap_or_default()))
    }
}
