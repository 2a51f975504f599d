//! The raft log on disk: raft-rs's `Storage` over a directory of three
//! files, or in memory only (single-node clusters that need no durability).
//!
//! - `hardstate`: term, vote, commit (protobuf), replaced atomically.
//! - `snapshot`: the last snapshot, metadata and state-machine bytes,
//!   replaced atomically (write, fsync, rename, fsync the directory).
//! - `log`: the entries after the snapshot, appended as checksummed records
//!   `[len u32][crc32 u32][protobuf Entry]`.
//!
//! Fsync policy: every `append`, `set_hardstate` and snapshot is on disk
//! (fsync) before the replica sends the messages that depend on it, as raft
//! requires (a vote or an acknowledgement must survive a crash). A torn
//! record at the end of `log` (a crash mid-append, never acknowledged) is
//! cut off on load; any other damage is an error, not a guess.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

const LOG_MAGIC: &[u8; 8] = b"NXRLOG1\n";
/// One log record's header: length and checksum.
const RECORD_HEADER: usize = 8;

/// Storage failures (disk or damaged files).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing a file failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not parse or the log has a gap.
    #[error("raft log {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug)]
struct Core {
    hard: HardState,
    snapshot: Snapshot,
    /// `entries[i].index == snapshot.index + 1 + i`.
    entries: Vec<Entry>,
    disk: Option<Disk>,
}

#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    log: File,
}

/// Raft storage, cheap to clone (all clones share one log).
#[derive(Clone, Debug)]
pub struct LogStorage {
    core: Arc<RwLock<Core>>,
}

impl LogStorage {
    /// A log kept in memory only, for a cluster of `voters`.
    pub fn in_memory(voters: &[u64]) -> Self {
        let core = Core { hard: HardState::default(), snapshot: initial_snapshot(voters), entries: vec![], disk: None };
        Self { core: Arc::new(RwLock::new(core)) }
    }

    /// Opens (or creates) the log in `dir`. `voters` is the membership of a
    /// new cluster; an existing log keeps the membership it recorded.
    pub fn open(dir: &Path, voters: &[u64]) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let snapshot_path = dir.join("snapshot");
        let snapshot = match read_optional(&snapshot_path)? {
            Some(bytes) => parse::<Snapshot>(&snapshot_path, &bytes)?,
            None => {
                // A new log: record the membership before anything else.
                let snapshot = initial_snapshot(voters);
                atomic_write(dir, "snapshot", &encode(&snapshot_path, &snapshot)?)?;
                snapshot
            }
        };
        let hard_path = dir.join("hardstate");
        let hard = match read_optional(&hard_path)? {
            Some(bytes) => parse::<HardState>(&hard_path, &bytes)?,
            None => HardState::default(),
        };
        let log_path = dir.join("log");
        let entries = read_log(&log_path, snapshot.get_metadata().index)?;
        let log = OpenOptions::new().append(true).open(&log_path).map_err(io_err(&log_path))?;
        let core = Core { hard, snapshot, entries, disk: Some(Disk { dir: dir.to_path_buf(), log }) };
        Ok(Self { core: Arc::new(RwLock::new(core)) })
    }

    fn read(&self) -> RwLockReadGuard<'_, Core> {
        // A poisoned lock means a panic mid-update in this process; the data
        // on disk is still consistent, so keep serving what is in memory.
        self.core.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends entries from a `Ready`, replacing any conflicting suffix.
    pub fn append(&self, entries: &[Entry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let mut core = self.write();
        let offset = core.snapshot.get_metadata().index + 1;
        if first.index < offset {
            return Err(LogError::Corrupt {
                path: core.log_path(),
                reason: format!("append at {} before the snapshot ({})", first.index, offset - 1),
            });
        }
        let keep = (first.index - offset) as usize;
        let truncating = keep < core.entries.len();
        if keep > core.entries.len() {
            return Err(LogError::Corrupt {
                path: core.log_path(),
                reason: format!("append at {} leaves a gap after {}", first.index, offset + keep as u64 - 1),
            });
        }
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
        if truncating {
            core.rewrite_log()
        } else {
            core.append_records(entries)
        }
    }

    /// Records term, vote and commit.
    pub fn set_hardstate(&self, hard: HardState) -> Result<(), LogError> {
        let mut core = self.write();
        core.hard = hard;
        core.persist_hardstate()
    }

    /// Records a new commit index.
    pub fn set_commit(&self, commit: u64) -> Result<(), LogError> {
        let mut core = self.write();
        core.hard.commit = commit;
        core.persist_hardstate()
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), LogError> {
        let mut core = self.write();
        let meta = snapshot.get_metadata();
        core.hard.term = core.hard.term.max(meta.term);
        core.hard.commit = core.hard.commit.max(meta.index);
        let index = meta.index;
        core.entries.retain(|e| e.index > index);
        if core.entries.first().is_some_and(|e| e.index != index + 1) {
            core.entries.clear();
        }
        core.snapshot = snapshot;
        core.persist_snapshot()?;
        core.persist_hardstate()?;
        core.rewrite_log()
    }

    /// Takes a snapshot of the state machine at `applied` (which must be in
    /// the log) and drops the entries it covers.
    pub fn compact(&self, applied: u64, conf_state: ConfState, data: Vec<u8>) -> Result<(), LogError> {
        let mut core = self.write();
        let term = match core.term_of(applied) {
            Ok(t) => t,
            Err(e) => {
                return Err(LogError::Corrupt { path: core.log_path(), reason: format!("compact at {applied}: {e}") })
            }
        };
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = applied;
        snapshot.mut_metadata().term = term;
        snapshot.mut_metadata().set_conf_state(conf_state);
        snapshot.data = data.into();
        core.entries.retain(|e| e.index > applied);
        core.snapshot = snapshot;
        core.persist_snapshot()?;
        core.rewrite_log()
    }

    /// Index of the last snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.read().snapshot.get_metadata().index
    }

    /// The last snapshot's state-machine bytes (empty for a new log).
    pub fn snapshot_data(&self) -> bytes::Bytes {
        self.read().snapshot.data.clone()
    }

    /// The membership recorded with the snapshot.
    pub fn conf_state(&self) -> ConfState {
        self.read().snapshot.get_metadata().get_conf_state().clone()
    }

    /// Bytes of entries held after the snapshot.
    pub fn log_bytes(&self) -> u64 {
        self.read().entries.iter().map(|e| e.data.len() as u64).sum()
    }
}

fn initial_snapshot(voters: &[u64]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().mut_conf_state().voters = voters.to_vec();
    snapshot
}

impl Core {
    fn log_path(&self) -> PathBuf {
        self.disk.as_ref().map(|d| d.dir.join("log")).unwrap_or_else(|| PathBuf::from("<memory>"))
    }

    fn term_of(&self, idx: u64) -> Result<u64, StorageError> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < meta.index {
            return Err(StorageError::Compacted);
        }
        self.entries.get((idx - meta.index - 1) as usize).map(|e| e.term).ok_or(StorageError::Unavailable)
    }

    fn persist_hardstate(&mut self) -> Result<(), LogError> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let bytes = encode(&disk.dir.join("hardstate"), &self.hard)?;
        atomic_write(&disk.dir, "hardstate", &bytes)
    }

    fn persist_snapshot(&mut self) -> Result<(), LogError> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let bytes = encode(&disk.dir.join("snapshot"), &self.snapshot)?;
        atomic_write(&disk.dir, "snapshot", &bytes)
    }

    fn append_records(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        let path = disk.dir.join("log");
        let buf = records(&path, entries)?;
        disk.log.write_all(&buf).map_err(io_err(&path))?;
        disk.log.sync_data().map_err(io_err(&path))
    }

    fn rewrite_log(&mut self) -> Result<(), LogError> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        let path = disk.dir.join("log");
        let mut buf = LOG_MAGIC.to_vec();
        buf.extend(records(&path, &self.entries)?);
        atomic_write(&disk.dir, "log", &buf)?;
        disk.log = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        Ok(())
    }
}

impl Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.read();
        Ok(RaftState {
            hard_state: core.hard.clone(),
            conf_state: core.snapshot.get_metadata().get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.read();
        let offset = core.snapshot.get_metadata().index + 1;
        if low < offset {
            return Err(StorageError::Compacted.into());
        }
        let end = offset + core.entries.len() as u64;
        if high > end || low > high {
            return Err(StorageError::Unavailable.into());
        }
        let mut out = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.read().term_of(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().snapshot.get_metadata().index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        let core = self.read();
        Ok(core.snapshot.get_metadata().index + core.entries.len() as u64)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.read();
        if core.snapshot.get_metadata().index < request_index {
            return Err(StorageError::SnapshotTemporarilyUnavailable.into());
        }
        Ok(core.snapshot.clone())
    }
}

fn encode<M: protobuf::Message>(path: &Path, m: &M) -> Result<Vec<u8>, LogError> {
    m.write_to_bytes().map_err(|e| LogError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

fn parse<M: protobuf::Message>(path: &Path, bytes: &[u8]) -> Result<M, LogError> {
    M::parse_from_bytes(bytes).map_err(|e| LogError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })
}

fn records(path: &Path, entries: &[Entry]) -> Result<Vec<u8>, LogError> {
    let mut buf = Vec::new();
    for e in entries {
        let body = encode(path, e)?;
        let len = u32::try_from(body.len()).map_err(|_| LogError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("entry {} is {} bytes, over the 4 GiB record limit", e.index, body.len()),
        })?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        buf.extend_from_slice(&body);
    }
    Ok(buf)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads the entries after `snapshot_index`, cutting off a torn tail.
fn read_log(path: &Path, snapshot_index: u64) -> Result<Vec<Entry>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt { path: path.to_path_buf(), reason };
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    if bytes.is_empty() {
        let dir = path.parent().unwrap_or(Path::new("."));
        atomic_write(dir, "log", LOG_MAGIC)?;
        return Ok(vec![]);
    }
    if bytes.len() < LOG_MAGIC.len() || &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
        return Err(corrupt("not a Nexus raft log (bad magic)".into()));
    }
    let mut pos = LOG_MAGIC.len();
    let mut entries: Vec<Entry> = Vec::new();
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + RECORD_HEADER) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else { break };
        if crc32fast::hash(body) != crc {
            // Only the last record may be torn; damage before it is real.
            if pos + RECORD_HEADER + len < bytes.len() {
                return Err(corrupt(format!("checksum mismatch in the record at byte {pos}")));
            }
            break;
        }
        let entry: Entry = parse(path, body)?;
        if let Some(last) = entries.last() {
            if entry.index != last.index + 1 {
                return Err(corrupt(format!("entry {} follows entry {}", entry.index, last.index)));
            }
        }
        entries.push(entry);
        pos += RECORD_HEADER + len;
    }
    if pos < bytes.len() {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(pos as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    entries.retain(|e| e.index > snapshot_index);
    if let Some(first) = entries.first() {
        if first.index != snapshot_index + 1 {
            return Err(corrupt(format!("log starts at {} but the snapshot ends at {snapshot_index}", first.index)));
        }
    }
    Ok(entries)
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the
/// new file, never a mix.
fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    write_atomically(dir, name, bytes).map_err(|(path, source)| LogError::Io { path, source })
}

/// Writes `dir/name` through `dir/name.tmp`: written, synced, renamed, the
/// directory synced. A failure names the path it happened on.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    fn at(p: &Path) -> impl Fn(std::io::Error) -> (PathBuf, std::io::Error) + '_ {
        move |e| (p.to_path_buf(), e)
    }
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(at(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    fn all(s: &LogStorage) -> Vec<(u64, u64, Vec<u8>)> {
        let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
        s.entries(lo, hi, None, GetEntriesContext::empty(false))
            .unwrap()
            .into_iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect()
    }

    #[test]
    fn log_survives_reopen_with_truncation_compaction_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]).unwrap();
        // A new leader overwrites 3 and appends 4.
        s.append(&[entry(3, 2, b"C"), entry(4, 2, b"d")]).unwrap();
        let hs = HardState { term: 2, vote: 3, commit: 4, ..Default::default() };
        s.set_hardstate(hs.clone()).unwrap();
        drop(s);
        let s = LogStorage::open(dir.path(), &[9]).unwrap();
        assert_eq!(s.initial_state().unwrap().hard_state, hs);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert_eq!(all(&s).iter().map(|e| e.2.clone()).collect::<Vec<_>>(), vec![b"a", b"b", b"C", b"d"]);
        s.compact(2, s.initial_state().unwrap().conf_state, b"state@2".to_vec()).unwrap();
        s.append(&[entry(5, 2, b"e")]).unwrap();
        drop(s);
        // A torn record at the tail is cut off; everything before it stays.
        let log = dir.path().join("log");
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
        std::fs::write(&log, &bytes).unwrap();
        let s = LogStorage::open(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(matches!(s.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(all(&s), vec![(3, 2, b"C".to_vec()), (4, 2, b"d".to_vec()), (5, 2, b"e".to_vec())]);
        assert_eq!(&s.snapshot_data()[..], b"state@2");
        assert_eq!(std::fs::read(&log).unwrap().len(), bytes.len() - 9);
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStorage::open(dir.path(), &[1]).unwrap();
        s.append(&[entry(1, 1, b"first"), entry(2, 1, b"second")]).unwrap();
        drop(s);
        let log = dir.path().join("log");
        let mut bytes = std::fs::read(&log).unwrap();
        let at = LOG_MAGIC.len() + RECORD_HEADER + 2;
        bytes[at] ^= 0xff;
        std::fs::write(&log, &bytes).unwrap();
        let err = LogStorage::open(dir.path(), &[1]).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn received_snapshot_replaces_the_log() {
        let s = LogStorage::in_memory(&[1, 2]);
        s.append(&[entry(1, 1, b"x"), entry(2, 1, b"y")]).unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 10;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
        snap.data = b"state@10".to_vec().into();
        s.apply_snapshot(snap).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (11, 10));
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 10);
        assert_eq!(s.snapshot(5, 2).unwrap().get_metadata().index, 10);
        assert!(s.snapshot(11, 2).is_err());
    }
}
