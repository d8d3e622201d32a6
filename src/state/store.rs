//! Where the state lives, behind one small trait: the state directory
//! (`FileStore`, the default) or PostgreSQL (`state::postgres`). A backend
//! holds named documents (`history.json`, `runs/<id>.json`, …), each read
//! and replaced whole, and the rollback lock. The stores (history, breaker,
//! revisions, journal) read and write their [`Doc`] as they would a file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file::{write_atomic, StateLock};
use super::StateDir;

/// A state backend.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The whole document; `NotFound` when it does not exist.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Replaces the document whole, atomically.
    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Removes it; `NotFound` when it does not exist.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of the documents in `dir` (like `runs`), as `dir/name`.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Where a document is, for messages: a path, or the table and key.
    fn location(&self, name: &str) -> PathBuf;
    /// The rollback lock, if no rollback (here, in another process or on
    /// another replica) holds it.
    fn try_lock(&self) -> io::Result<Option<StateLock>>;
}

/// One named document of a backend, read and written like a file.
#[derive(Clone)]
pub struct Doc {
    store: Arc<dyn StateStore>,
    name: String,
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Doc({})", self.path().display())
    }
}

impl Doc {
    pub fn new(store: Arc<dyn StateStore>, name: impl Into<String>) -> Doc {
        Doc {
            store,
            name: name.into(),
        }
    }

    /// A document that is the file at `path` (tests, and tools given a path).
    pub fn file(path: impl Into<PathBuf>) -> Doc {
        let path = path.into();
        let dir = path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Doc::new(Arc::new(FileStore::new(StateDir::new(dir))), name)
    }

    pub fn read(&self) -> io::Result<Vec<u8>> {
        self.store.read(&self.name)
    }

    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.store.write(&self.name, bytes)
    }

    pub fn remove(&self) -> io::Result<()> {
        self.store.remove(&self.name)
    }

    /// Where it is, for messages.
    pub fn path(&self) -> PathBuf {
        self.store.location(&self.name)
    }
}

/// The state directory: a file per document, written atomically, and the
/// rollback lock as an exclusive lock on `rollback.lock`.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: StateDir,
}

impl FileStore {
    pub fn new(dir: StateDir) -> FileStore {
        FileStore { dir }
    }
}

impl StateStore for FileStore {
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        read_regular(&self.location(name))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.location(name), bytes)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.location(name))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(self.location(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            // Temporary files of an interrupted atomic write are not documents.
            .filter(|n| !n.starts_with('.'))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        Ok(names)
    }

    fn location(&self, name: &str) -> PathBuf {
        self.dir.root().join(name)
    }

    fn try_lock(&self) -> io::Result<Option<StateLock>> {
        StateLock::try_acquire(&self.dir.rollback_lock())
    }
}

/// The whole of a regular file. Anything else under that name (a FIFO
/// would block the reader forever, a device never end) is refused without
/// being read: it is opened without blocking and checked first.
pub(super) fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a regular file (a FIFO, a device or a directory); move it out of the state directory",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_the_state_directory_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("runs-x.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a plain system call with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::write(dir.path().join("ok.json"), b"{}").unwrap();
        assert_eq!(read_regular(&dir.path().join("ok.json")).unwrap(), b"{}");
    }

    #[test]
    fn a_file_store_reads_writes_lists_and_removes_documents() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(FileStore::new(StateDir::new(dir.path())));
        let doc = Doc::new(store.clone(), "runs/rb-1.json");
        assert_eq!(doc.read().unwrap_err().kind(), io::ErrorKind::NotFound);
        doc.write(b"{}").unwrap();
        assert_eq!(doc.read().unwrap(), b"{}");
        std::fs::write(dir.path().join("runs/.rb-2.json.7.tmp"), "").unwrap();
        assert_eq!(store.list("runs").unwrap(), ["runs/rb-1.json"]);
        assert_eq!(doc.path(), dir.path().join("runs/rb-1.json"));
        doc.remove().unwrap();
        assert_eq!(doc.remove().unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(store.list("nothing").unwrap().is_empty());
        let held = store.try_lock().unwrap();
        assert!(held.is_some() && store.try_lock().unwrap().is_none());
    }
}
