//! A model directory as one versioned whole: every file a load reads,
//! read once and digested in the order read (name, presence, length and
//! bytes), so that a query can name the exact files its client embedded
//! with and a worker holding other ones under the same name refuses it
//! instead of answering with another model.

use crate::error::{invalid, NnError};
use std::path::{Path, PathBuf};

/// Reads files of one model directory, digesting each.
#[derive(Debug)]
pub struct ModelFiles {
    dir: PathBuf,
    hasher: blake3::Hasher,
}

impl ModelFiles {
    /// Files of `dir`, none read yet.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), hasher: blake3::Hasher::new() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `name` is, for messages.
    pub fn shown(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        name.split('/').fold(self.dir.clone(), |path, part| path.join(part))
    }

    /// `name`'s bytes (a path relative to the directory, `/`-separated).
    pub fn read(&mut self, name: &str) -> Result<Vec<u8>, NnError> {
        let path = self.path(name);
        let bytes = std::fs::read(&path).map_err(|e| invalid("model", format!("{}: {e}", path.display())))?;
        self.absorb(name, Some(&bytes));
        Ok(bytes)
    }

    /// `name`'s bytes, or `None` where the directory has no such file (its
    /// absence is digested too: adding it makes another model).
    pub fn read_optional(&mut self, name: &str) -> Result<Option<Vec<u8>>, NnError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                self.absorb(name, Some(&bytes));
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.absorb(name, None);
                Ok(None)
            }
            Err(e) => Err(invalid("model", format!("{}: {e}", path.display()))),
        }
    }

    fn absorb(&mut self, name: &str, bytes: Option<&[u8]>) {
        // Length-prefixed, so no two sequences of files digest alike.
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        match bytes {
            None => {
                self.hasher.update(&[0]);
            }
            Some(bytes) => {
                self.hasher.update(&[1]);
                self.hasher.update(&(bytes.len() as u64).to_le_bytes());
                self.hasher.update(bytes);
            }
        }
    }

    /// BLAKE3 of everything read so far.
    pub fn digest(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

/// `bytes` as UTF-8 text, or an error naming `name`.
pub(crate) fn text(bytes: Vec<u8>, name: &str) -> Result<String, NnError> {
    String::from_utf8(bytes).map_err(|e| invalid("model", format!("{name}: not UTF-8 ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_names_contents_and_absences() {
        let dir = std::env::temp_dir().join(format!("nexus-model-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), b"one").unwrap();
        std::fs::write(dir.join("sub").join("b"), b"two").unwrap();
        let digest = |names: &[&str]| {
            let mut files = ModelFiles::new(&dir);
            for name in names {
                files.read_optional(name).unwrap();
            }
            files.digest()
        };
        // The format pinned: computed by an independent implementation
        // (Python's blake3 over the same length-prefixed records).
        let pinned = "f8d4bfe1490c66d236688d7f7a3cdb6c05b047268db3e1e649772cf4edd35c8f";
        let hex: String = digest(&["a", "sub/b", "absent"]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, pinned);
        let both = digest(&["a", "sub/b"]);
        assert_eq!(both, digest(&["a", "sub/b"]));
        assert_ne!(both, digest(&["sub/b", "a"]));
        assert_ne!(both, digest(&["a"]));
        assert_ne!(digest(&["a"]), digest(&["a", "absent"]));
        let mut files = ModelFiles::new(&dir);
        assert_eq!(files.read("sub/b").unwrap(), b"two");
        assert!(files.read("absent").unwrap_err().to_string().contains("absent"));
        std::fs::write(dir.join("a"), b"One").unwrap();
        assert_ne!(both, digest(&["a", "sub/b"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
