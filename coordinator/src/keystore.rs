//! Key sets by content address, outside the raft log.
//!
//! A key set is gigabytes (about 5 GB for a BERT encoder at N = 2^16); the
//! replicated state names it by digest and length only, and its bytes live
//! here: one file per key set under the data directory (`keys/<64 hex>`),
//! or in memory for a coordinator without one. The leader stores an upload
//! on a majority of coordinators before the log names it (see
//! `crate::keyreplication`), so a new leader can always find the bytes.
//!
//! On disk, a key set is never whole in memory: an upload (or a peer's
//! copy) is streamed chunk by chunk into a temporary file, checked against
//! its digest, synced and renamed, so a crash leaves a whole key set or
//! none; sending reads the file chunk by chunk and checks the digest of
//! what it read, so a damaged file is removed (a peer's copy replaces it)
//! and the receiver, which checks the digest too, refuses it.

use nexus_proto::blob::BlobRef;
use nexus_proto::ids::KeySetId;
use nexus_proto::quic::{recv_blob, recv_blob_into, send_blob, send_blob_from};
use nexus_proto::ProtoError;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the bytes are.
#[derive(Debug)]
enum Backing {
    /// Held in memory for the coordinator's lifetime.
    Memory(HashMap<KeySetId, Arc<Vec<u8>>>),
    /// One file per key set; `present` lists them.
    Disk { dir: PathBuf, present: HashSet<KeySetId> },
}

/// A stored key set, ready to stream.
#[derive(Debug, Clone)]
pub enum StoredKeys {
    /// In memory (a store without a data directory).
    Memory(Arc<Vec<u8>>),
    /// A file of `len` bytes.
    File { path: PathBuf, len: u64 },
}

impl StoredKeys {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            StoredKeys::Memory(bytes) => bytes.len() as u64,
            StoredKeys::File { len, .. } => *len,
        }
    }

    /// Whether the key set has no bytes (never, for a real key set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why receiving a key set failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The sender's bytes were refused (length, framing, digest).
    #[error(transparent)]
    Refused(#[from] ProtoError),
    /// This coordinator could not store them.
    #[error("{0}")]
    Storage(String),
}

/// The coordinator's key-set bytes.
#[derive(Debug, Clone)]
pub struct KeyStore {
    inner: Arc<Mutex<Backing>>,
    /// When each key set was last received here (by this process): a key
    /// set deleted and then uploaded again is stored before the log
    /// registers it anew, so a reception after the deletion must not be
    /// mistaken for the deleted copy (see
    /// [`remove_retired`](Self::remove_retired)).
    received: Arc<Mutex<HashMap<KeySetId, Instant>>>,
}

/// Distinguishes the temporary files of receptions running at once (two
/// uploads of one key set must not write the same file).
static RECEPTION: AtomicU64 = AtomicU64::new(0);

impl KeyStore {
    /// A store in memory.
    pub fn in_memory() -> Self {
        Self::with(Backing::Memory(HashMap::new()))
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
        Ok(Self::with(Backing::Disk { dir: dir.to_path_buf(), present }))
    }

    fn with(backing: Backing) -> Self {
        Self { inner: Arc::new(Mutex::new(backing)), received: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backing> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether key sets are held in memory (an upload then takes its size
    /// in memory; on disk it takes one chunk).
    pub fn in_memory_only(&self) -> bool {
        matches!(&*self.lock(), Backing::Memory(_))
    }

    /// Whether the bytes of `id` are here.
    pub fn contains(&self, id: &KeySetId) -> bool {
        match &*self.lock() {
            Backing::Memory(map) => map.contains_key(id),
            Backing::Disk { present, .. } => present.contains(id),
        }
    }

    /// Bytes of every key set stored here.
    pub fn stored_bytes(&self) -> u64 {
        let paths: Vec<PathBuf> = match &*self.lock() {
            Backing::Memory(map) => return map.values().map(|b| b.len() as u64).sum(),
            Backing::Disk { dir, present } => present.iter().map(|id| dir.join(id.to_hex())).collect(),
        };
        // Not under the lock: file system calls can be slow.
        paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// The stored bytes of `id`, `None` if they are not here.
    pub fn stored(&self, id: &KeySetId) -> Option<StoredKeys> {
        let path = match &*self.lock() {
            Backing::Memory(map) => return map.get(id).cloned().map(StoredKeys::Memory),
            Backing::Disk { present, .. } if !present.contains(id) => return None,
            Backing::Disk { dir, .. } => dir.join(id.to_hex()),
        };
        match std::fs::metadata(&path) {
            Ok(meta) => Some(StoredKeys::File { path, len: meta.len() }),
            Err(e) => {
                tracing::warn!(key_set = %id, path = %path.display(), error = %e, "stored key set is gone");
                self.forget(id);
                None
            }
        }
    }

    /// Receives the blob of `len` bytes announced as `id` from `r` and
    /// stores it (durably, before returning, on disk). The bytes are
    /// checked against `id` (their digest) in every case: a key set already
    /// stored is received and checked but not written again.
    pub async fn receive<R: AsyncRead + Unpin>(
        &self,
        id: KeySetId,
        len: u64,
        max_len: u64,
        r: &mut R,
    ) -> Result<(), ReceiveError> {
        // The start counts: a reception that began before a deletion holds
        // the deleted bytes, however late it ends.
        let started = Instant::now();
        let result = self.receive_checked(id, len, max_len, r).await;
        if result.is_ok() {
            self.mark_received(id, started);
        }
        result
    }

    /// Records that the bytes of `id` were received (or offered again by
    /// the leader, for a key set stored here already) at `at`.
    pub fn mark_received(&self, id: KeySetId, at: Instant) {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).insert(id, at);
    }

    async fn receive_checked<R: AsyncRead + Unpin>(
        &self,
        id: KeySetId,
        len: u64,
        max_len: u64,
        r: &mut R,
    ) -> Result<(), ReceiveError> {
        let blob = BlobRef { len, digest: id.0 };
        let dir = match &*self.lock() {
            Backing::Memory(_) => None,
            Backing::Disk { present, .. } if present.contains(&id) => None,
            Backing::Disk { dir, .. } => Some(dir.clone()),
        };
        let Some(dir) = dir else {
            let bytes = if self.in_memory_only() {
                recv_blob(r, &blob, max_len).await?
            } else {
                recv_blob_into(r, &blob, max_len, &mut tokio::io::sink()).await?;
                return Ok(());
            };
            if let Backing::Memory(map) = &mut *self.lock() {
                map.entry(id).or_insert_with(|| Arc::new(bytes));
            }
            return Ok(());
        };
        let name = id.to_hex();
        let tmp = dir.join(format!("{name}.{}.tmp", RECEPTION.fetch_add(1, Ordering::Relaxed)));
        let result = receive_file(&tmp, &dir.join(&name), &dir, &blob, max_len, r).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result?;
        if let Backing::Disk { present, .. } = &mut *self.lock() {
            present.insert(id);
        }
        Ok(())
    }

    /// Streams the stored bytes of `id` on `send` (after the caller's
    /// message announcing them). A file whose bytes no longer hash to `id`
    /// is removed (a peer's copy can replace it) and reported.
    pub async fn send<W: AsyncWrite + Unpin>(
        &self,
        id: &KeySetId,
        keys: StoredKeys,
        send: &mut W,
    ) -> Result<(), String> {
        match keys {
            StoredKeys::Memory(bytes) => send_blob(send, &bytes).await.map_err(|e| e.to_string()),
            StoredKeys::File { path, len } => {
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| format!("reading key set {id} from {}: {e}", path.display()))?;
                let digest = send_blob_from(send, &mut file, len)
                    .await
                    .map_err(|e| format!("sending key set {id} from {}: {e}", path.display()))?;
                if digest != id.0 {
                    tracing::warn!(key_set = %id, path = %path.display(), "stored key set is damaged; removing it");
                    self.forget(id);
                    let _ = tokio::fs::remove_file(&path).await;
                    return Err(format!("stored key set {id} was damaged ({}); removed", path.display()));
                }
                Ok(())
            }
        }
    }

    fn forget(&self, id: &KeySetId) {
        if let Backing::Disk { present, .. } = &mut *self.lock() {
            present.remove(id);
        }
    }

    /// Removes the bytes of `id` (its last owner deleted it); whether they
    /// were here. A send already reading the file finishes from its open
    /// handle.
    pub async fn remove(&self, id: &KeySetId) -> Result<bool, String> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let path = match &mut *self.lock() {
            Backing::Memory(map) => return Ok(map.remove(id).is_some()),
            Backing::Disk { dir, present } => match present.remove(id) {
                true => dir.join(id.to_hex()),
                false => return Ok(false),
            },
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => {
                // Still there: named again, so the next check retries.
                if let Backing::Disk { present, .. } = &mut *self.lock() {
                    present.insert(*id);
                }
                Err(format!("removing key set {id} ({}): {e}", path.display()))
            }
        }
    }

    /// Removes the stored key sets among `retired` (deleted by their last
    /// owner, with the time this member applied the deletion if it did),
    /// except those received here after that: the upload of a key set
    /// registered again, stored before the log names it anew. Returns the
    /// ids removed.
    pub async fn remove_retired(&self, retired: &[(KeySetId, Option<Instant>)]) -> Vec<KeySetId> {
        let mut removed = Vec::new();
        for (id, retired_at) in retired.iter().filter(|(id, _)| self.contains(id)) {
            let received = self.received.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied();
            if received.zip(*retired_at).is_some_and(|(received, retired)| received > retired) {
                continue;
            }
            match self.remove(id).await {
                Ok(true) => removed.push(*id),
                Ok(false) => {}
                Err(e) => tracing::warn!(key_set = %id, error = %e, "removing a deleted key set"),
            }
        }
        removed
    }
}

/// Receives `blob` into `tmp`, then syncs it and renames it to `path`
/// (and syncs `dir`, so the name survives a crash).
async fn receive_file<R: AsyncRead + Unpin>(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    blob: &BlobRef,
    max_len: u64,
    r: &mut R,
) -> Result<(), ReceiveError> {
    let storage =
        |what: &str, at: &Path, e: std::io::Error| ReceiveError::Storage(format!("{what} {}: {e}", at.display()));
    let mut file = tokio::fs::File::create(tmp).await.map_err(|e| storage("creating", tmp, e))?;
    recv_blob_into(r, blob, max_len, &mut file).await?;
    file.sync_all().await.map_err(|e| storage("syncing", tmp, e))?;
    drop(file);
    tokio::fs::rename(tmp, path).await.map_err(|e| storage("renaming to", path, e))?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| (dir, e)))
        .await
        .map_err(|e| ReceiveError::Storage(format!("syncing the key store: {e}")))?
        .map_err(|(dir, e)| storage("syncing", &dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A key set of `len` bytes: its id and its bytes as chunk frames.
    fn keys(seed: u8, len: usize) -> (KeySetId, Vec<u8>, Vec<u8>) {
        let bytes: Vec<u8> = (0..len as u32).map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 11) as u8).collect();
        let mut framed = Vec::new();
        nexus_proto::blob::write_blob(&mut framed, &bytes).unwrap();
        (KeySetId::of(&bytes), bytes, framed)
    }

    async fn receive(store: &KeyStore, id: KeySetId, len: usize, framed: &[u8]) -> Result<(), ReceiveError> {
        store.receive(id, len as u64, u64::MAX, &mut &framed[..]).await
    }

    /// What `send` puts on the wire for `id`.
    async fn sent(store: &KeyStore, id: &KeySetId) -> Result<Vec<u8>, String> {
        let stored = store.stored(id).ok_or("not stored")?;
        let mut wire = Vec::new();
        store.send(id, stored, &mut wire).await?;
        Ok(wire)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn memory_store_holds_what_it_received() {
        let store = KeyStore::in_memory();
        let (id, bytes, framed) = keys(3, 10_000);
        assert!(!store.contains(&id) && store.stored(&id).is_none());
        receive(&store, id, bytes.len(), &framed).await.unwrap();
        assert!(store.contains(&id) && store.in_memory_only());
        assert!(matches!(store.stored(&id), Some(StoredKeys::Memory(b)) if *b == bytes));
        assert_eq!(sent(&store, &id).await.unwrap(), framed);
    }

    /// Several chunks (the last one short), a reopened store, and a
    /// leftover temporary file of an interrupted reception.
    #[tokio::test]
    async fn disk_store_streams_key_sets_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let len = 2 * nexus_proto::blob::CHUNK + 12_345;
        let (a, a_bytes, a_framed) = keys(3, len);
        let (b, _, b_framed) = keys(5, 777);
        {
            let store = KeyStore::open(dir.path()).unwrap();
            receive(&store, a, len, &a_framed).await.unwrap();
            receive(&store, b, 777, &b_framed).await.unwrap();
            // Received again: checked, nothing written.
            receive(&store, a, len, &a_framed).await.unwrap();
            assert!(!store.in_memory_only());
            assert_eq!(std::fs::read(dir.path().join(a.to_hex())).unwrap(), a_bytes);
        }
        std::fs::write(dir.path().join(format!("{}.7.tmp", a.to_hex())), b"half written").unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.contains(&a) && store.contains(&b));
        assert!(matches!(store.stored(&a), Some(StoredKeys::File { len: l, .. }) if l == len as u64));
        assert_eq!(sent(&store, &a).await.unwrap(), a_framed);
        assert_eq!(sent(&store, &b).await.unwrap(), b_framed);
        assert_eq!(
            files(dir.path()),
            {
                let mut v = vec![a.to_hex(), b.to_hex()];
                v.sort();
                v
            },
            "leftover removed"
        );
    }

    /// A deleted key set's bytes go, unless their reception started after
    /// the deletion (the key set is being registered again).
    #[tokio::test]
    async fn deleted_key_sets_are_removed_unless_received_again_since() {
        let dir = tempfile::tempdir().unwrap();
        for store in [KeyStore::in_memory(), KeyStore::open(dir.path()).unwrap()] {
            let (a, _, a_framed) = keys(3, 1000);
            let (b, _, b_framed) = keys(5, 777);
            let (c, _, c_framed) = keys(7, 555);
            receive(&store, a, 1000, &a_framed).await.unwrap();
            receive(&store, b, 777, &b_framed).await.unwrap();
            // c is deleted, then uploaded again (registration pending).
            let c_retired = Instant::now();
            receive(&store, c, 555, &c_framed).await.unwrap();
            let later = Instant::now();
            let retired = [(a, None), (b, Some(later)), (c, Some(c_retired))];
            let mut removed = store.remove_retired(&retired).await;
            removed.sort();
            let mut expected = vec![a, b];
            expected.sort();
            assert_eq!(removed, expected, "received before their deletion (or learnt from a snapshot)");
            assert!(!store.contains(&a) && !store.contains(&b) && store.contains(&c));
            assert!(store.stored(&a).is_none());
            assert!(!store.remove(&a).await.unwrap(), "already gone");
            assert!(store.remove(&c).await.unwrap());
            if !store.in_memory_only() {
                assert!(files(dir.path()).is_empty(), "files left: {:?}", files(dir.path()));
            }
            // Stored again after a deletion: whole.
            receive(&store, a, 1000, &a_framed).await.unwrap();
            assert_eq!(sent(&store, &a).await.unwrap(), a_framed);
        }
    }

    /// Bytes that are not the key set's are refused, leave nothing behind,
    /// and cannot stand in for a stored key set either (a tenant proves it
    /// holds the bytes).
    #[tokio::test]
    async fn bytes_that_do_not_hash_to_the_id_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let (id, bytes, framed) = keys(9, 5000);
        let (_, _, other) = keys(11, 5000);
        let err = receive(&store, id, bytes.len(), &other).await.unwrap_err();
        assert!(matches!(&err, ReceiveError::Refused(_)) && err.to_string().contains("digest"), "{err}");
        assert!(!store.contains(&id));
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        let short = &framed[..framed.len() - 10];
        assert!(matches!(receive(&store, id, bytes.len(), short).await, Err(ReceiveError::Refused(_))));
        assert!(files(dir.path()).is_empty());
        receive(&store, id, bytes.len(), &framed).await.unwrap();
        assert!(matches!(receive(&store, id, bytes.len(), &other).await, Err(ReceiveError::Refused(_))));
        assert_eq!(std::fs::read(dir.path().join(id.to_hex())).unwrap(), bytes);
        let memory = KeyStore::in_memory();
        assert!(matches!(receive(&memory, id, bytes.len(), &other).await, Err(ReceiveError::Refused(_))));
        assert!(!memory.contains(&id));
    }

    #[tokio::test]
    async fn a_damaged_file_is_reported_and_removed_when_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes, framed) = keys(7, 3 * nexus_proto::blob::CHUNK);
        let store = KeyStore::open(dir.path()).unwrap();
        receive(&store, id, bytes.len(), &framed).await.unwrap();
        let path = dir.path().join(id.to_hex());
        let mut damaged = bytes.clone();
        damaged[nexus_proto::blob::CHUNK + 17] ^= 1;
        std::fs::write(&path, damaged).unwrap();
        let err = sent(&store, &id).await.unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        assert!(!store.contains(&id) && store.stored(&id).is_none());
        assert!(!path.exists());
        // A truncated file is an error too.
        receive(&store, id, bytes.len(), &framed).await.unwrap();
        let stored = store.stored(&id).unwrap();
        std::fs::write(&path, &bytes[..100]).unwrap();
        let err = store.send(&id, stored, &mut Vec::new()).await.unwrap_err();
        assert!(err.contains("ended after 100"), "{err}");
    }

    #[test]
    fn a_foreign_file_in_the_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        assert!(err.contains("notes.txt"), "{err}");
    }
}
