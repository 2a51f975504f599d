//! Key sets by content address, outside the raft log.
//!
//! A key set is gigabytes (about 9 GB for a BERT encoder at N = 2^16); the
//! replicated state names it by digest and length only, and its bytes live
//! here: one file per key set under the data directory (`keys/<64 hex>`),
//! or in memory for a coordinator without one. The leader stores an upload
//! on a majority of coordinators before the log names it (see
//! `crate::keyreplication`), so a new leader can always find the bytes.
//!
//! Files are written to a temporary name, synced and renamed, so a crash
//! leaves a whole key set or none. Reading checks the bytes against their
//! digest: a damaged file is removed and reported missing (a peer's copy
//! replaces it) rather than handed to a worker.

use nexus_proto::ids::KeySetId;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Where the bytes are.
#[derive(Debug)]
enum Backing {
    /// Held in memory for the coordinator's lifetime.
    Memory(HashMap<KeySetId, Arc<Vec<u8>>>),
    /// One file per key set; `present` lists them, `loaded` shares a key
    /// set's bytes among the transfers that are sending it right now.
    Disk { dir: PathBuf, present: HashSet<KeySetId>, loaded: HashMap<KeySetId, Weak<Vec<u8>>> },
}

/// The coordinator's key-set bytes.
#[derive(Debug, Clone)]
pub struct KeyStore {
    inner: Arc<Mutex<Backing>>,
}

impl KeyStore {
    /// A store in memory.
    pub fn in_memory() -> Self {
        Self { inner: Arc::new(Mutex::new(Backing::Memory(HashMap::new()))) }
    }

    /// The store in `dir` (created if missing). Leftover temporary files of
    /// an interrupted write are removed; files whose names are not key-set
    /// ids are refused, naming them.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating the key store {}: {e}", dir.display()))?;
        let mut present = HashSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("listing the key store {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing the key store {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let id = KeySetId::from_hex(&name).map_err(|e| {
                format!("{} is not a key set (names in the key store are key-set ids): {e}", entry.path().display())
            })?;
            present.insert(id);
        }
        let backing = Backing::Disk { dir: dir.to_path_buf(), present, loaded: HashMap::new() };
        Ok(Self { inner: Arc::new(Mutex::new(backing)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backing> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the bytes of `id` are here.
    pub fn contains(&self, id: &KeySetId) -> bool {
        match &*self.lock() {
            Backing::Memory(map) => map.contains_key(id),
            Backing::Disk { present, .. } => present.contains(id),
        }
    }

    /// Stores `bytes` as `id` (durably, before returning, on disk). The
    /// caller has checked the digest (a received blob is checked by
    /// `recv_blob`); storing a key set already here does nothing.
    pub fn put(&self, id: KeySetId, bytes: Arc<Vec<u8>>) -> Result<(), String> {
        let dir = match &mut *self.lock() {
            Backing::Memory(map) => {
                map.entry(id).or_insert(bytes);
                return Ok(());
            }
            Backing::Disk { dir, present, .. } if !present.contains(&id) => dir.clone(),
            Backing::Disk { .. } => return Ok(()),
        };
        // Written without the lock: other key sets stay readable meanwhile.
        crate::consensus::storage::write_atomically(&dir, &id.to_hex(), &bytes)
            .map_err(|(path, e)| format!("writing key set {id} to {}: {e}", path.display()))?;
        if let Backing::Disk { present, loaded, .. } = &mut *self.lock() {
            present.insert(id);
            loaded.insert(id, Arc::downgrade(&bytes));
        }
        Ok(())
    }

    /// The bytes of `id`, `Ok(None)` if they are not here (or were damaged:
    /// the damaged file is removed so that a peer's copy can replace it).
    pub fn get(&self, id: &KeySetId) -> Result<Option<Arc<Vec<u8>>>, String> {
        let path = match &*self.lock() {
            Backing::Memory(map) => return Ok(map.get(id).cloned()),
            Backing::Disk { present, .. } if !present.contains(id) => return Ok(None),
            Backing::Disk { loaded, dir, .. } => match loaded.get(id).and_then(Weak::upgrade) {
                Some(bytes) => return Ok(Some(bytes)),
                None => dir.join(id.to_hex()),
            },
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("reading key set {id} from {}: {e}", path.display()))?;
        let mut backing = self.lock();
        let Backing::Disk { present, loaded, .. } = &mut *backing else { return Ok(None) };
        if KeySetId::of(&bytes) != *id {
            tracing::warn!(key_set = %id, path = %path.display(), "stored key set is damaged; removing it");
            present.remove(id);
            loaded.remove(id);
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        // Another reader may have loaded it meanwhile: share one copy.
        if let Some(shared) = loaded.get(id).and_then(Weak::upgrade) {
            return Ok(Some(shared));
        }
        let bytes = Arc::new(bytes);
        loaded.insert(*id, Arc::downgrade(&bytes));
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys(seed: u8) -> (KeySetId, Arc<Vec<u8>>) {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
        (KeySetId::of(&bytes), Arc::new(bytes))
    }

    #[test]
    fn memory_store_holds_what_it_was_given() {
        let store = KeyStore::in_memory();
        let (id, bytes) = keys(3);
        assert!(!store.contains(&id));
        assert_eq!(store.get(&id).unwrap(), None);
        store.put(id, bytes.clone()).unwrap();
        assert!(store.contains(&id));
        assert_eq!(store.get(&id).unwrap().unwrap(), bytes);
    }

    #[test]
    fn disk_store_survives_reopening_and_shares_loaded_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_bytes) = keys(3);
        let (b, b_bytes) = keys(5);
        {
            let store = KeyStore::open(dir.path()).unwrap();
            store.put(a, a_bytes.clone()).unwrap();
            store.put(b, b_bytes.clone()).unwrap();
            // Stored again: nothing changes.
            store.put(a, a_bytes.clone()).unwrap();
            let first = store.get(&a).unwrap().unwrap();
            let second = store.get(&a).unwrap().unwrap();
            assert!(Arc::ptr_eq(&first, &second), "a key set being sent is read once");
        }
        std::fs::write(dir.path().join(format!("{}.tmp", a.to_hex())), b"half written").unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.contains(&a) && store.contains(&b));
        assert_eq!(*store.get(&a).unwrap().unwrap(), *a_bytes);
        assert_eq!(*store.get(&b).unwrap().unwrap(), *b_bytes);
        assert!(!dir.path().join(format!("{}.tmp", a.to_hex())).exists(), "leftover temporary file removed");
    }

    #[test]
    fn a_damaged_file_is_reported_missing_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = keys(7);
        let store = KeyStore::open(dir.path()).unwrap();
        store.put(id, bytes.clone()).unwrap();
        drop(bytes);
        let path = dir.path().join(id.to_hex());
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[17] ^= 1;
        std::fs::write(&path, damaged).unwrap();
        assert_eq!(store.get(&id).unwrap(), None);
        assert!(!store.contains(&id));
        assert!(!path.exists());
    }

    #[test]
    fn a_foreign_file_in_the_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        assert!(err.contains("notes.txt"), "{err}");
    }
}
