//! A scratch directory per test (SQLite files, TLS material, summaries),
//! removed on drop.

use std::path::PathBuf;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(crate::unique("chat-test"));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        TempDir(dir)
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
