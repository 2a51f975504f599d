//! One member of a raft group: raft-rs's `RawNode` driven by the Ready loop
//! on its own thread (raft-rs is synchronous and the log fsyncs), applying
//! committed entries to a [`StateMachine`] and taking snapshots.
//!
//! The rest of the coordinator talks to it through channels: `step` for
//! messages from peers, `propose` (async, resolves once the entry is applied
//! here) and a watch of the node's [`Role`]. Outgoing messages go to an
//! `Outbox` the transport supplies (QUIC in production, a lossy in-memory
//! network in tests).

use super::storage::{LogError, LogStorage};
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// What raft replicates: applied in log order on every member.
pub trait StateMachine: Send + 'static {
    /// The result of applying one command, returned to its proposer.
    type Output: Send + 'static;
    /// Applies a committed command. Must be deterministic; bad bytes get a
    /// rejection output, never a panic.
    fn apply(&mut self, data: &[u8]) -> Self::Output;
    /// The whole state, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot's.
    fn restore(&mut self, data: &[u8]) -> Result<(), String>;
}

/// Where the replica sends raft messages (must not block).
pub type Outbox = Box<dyn Fn(Message) + Send>;

/// Replica settings.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This member's id (non-zero).
    pub id: u64,
    /// All voters' ids, this one included.
    pub voters: Vec<u64>,
    /// Time per raft tick.
    pub tick: Duration,
    /// Ticks without a leader before campaigning (randomised up to 2x).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots (log compaction).
    pub snapshot_entries: u64,
    /// Bytes of log between snapshots, whichever comes first.
    pub snapshot_bytes: u64,
}

impl ReplicaConfig {
    /// Defaults: 100 ms ticks, elections after 0.8-1.6 s without a
    /// leader, heartbeats every 200 ms, a snapshot every 256 entries or
    /// 1 GiB of log.
    pub fn new(id: u64, voters: Vec<u64>) -> Self {
        Self {
            id,
            voters,
            tick: Duration::from_millis(100),
            election_ticks: 8,
            heartbeat_ticks: 2,
            snapshot_entries: 256,
            snapshot_bytes: 1 << 30,
        }
    }
}

/// Where this member stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// Current term.
    pub term: u64,
    /// The leader this member knows of (0: none).
    pub leader: u64,
    /// This member leads and has applied every entry of earlier terms, so
    /// its state machine is complete: it may schedule.
    pub leader_ready: bool,
    /// The replica stopped (disk failure or shutdown).
    pub stopped: bool,
}

/// Why a proposal has no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Not the leader (the known leader's id, 0 if none).
    #[error("not the raft leader (leader: {0})")]
    NotLeader(u64),
    /// Leadership was lost before the entry was applied here: it may or may
    /// not commit later (retry idempotently).
    #[error("leadership lost before the entry was applied; outcome unknown")]
    Unknown,
    /// The replica is not running.
    #[error("the raft replica stopped")]
    Stopped,
}

enum Event<O> {
    Step(Message),
    Propose(Vec<u8>, oneshot::Sender<Result<O, ProposeError>>),
    Campaign,
    Stop,
}

/// Handle to a running replica (cheap to clone).
pub struct Replica<M: StateMachine> {
    events: mpsc::Sender<Event<M::Output>>,
    role: watch::Receiver<Role>,
    machine: Arc<Mutex<M>>,
    id: u64,
}

impl<M: StateMachine> Clone for Replica<M> {
    fn clone(&self) -> Self {
        Self { events: self.events.clone(), role: self.role.clone(), machine: self.machine.clone(), id: self.id }
    }
}

impl<M: StateMachine> std::fmt::Debug for Replica<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.id).field("role", &*self.role.borrow()).finish()
    }
}

impl<M: StateMachine> Replica<M> {
    /// Restores `machine` from the log's snapshot and starts the Ready loop.
    pub fn start(config: ReplicaConfig, storage: LogStorage, mut machine: M, outbox: Outbox) -> Result<Self, String> {
        let snapshot = storage.snapshot_data();
        if !snapshot.is_empty() {
            machine.restore(&snapshot).map_err(|e| format!("restoring the state machine from the snapshot: {e}"))?;
        }
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: storage.snapshot_index(),
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 64,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate().map_err(|e| e.to_string())?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, storage.clone(), &logger).map_err(|e| e.to_string())?;
        let machine = Arc::new(Mutex::new(machine));
        let (events, rx) = mpsc::channel();
        let (role_tx, role) = watch::channel(Role::default());
        let single = config.voters == [config.id];
        let mut driver = Driver {
            node,
            storage,
            machine: machine.clone(),
            outbox,
            pending: HashMap::new(),
            next_proposal: 0,
            incarnation: rand::random(),
            role: role_tx,
            term_start: None,
            snapshot_reports: Vec::new(),
            config: config.clone(),
        };
        std::thread::Builder::new()
            .name(format!("raft-{}", config.id))
            .spawn(move || driver.run(rx))
            .map_err(|e| format!("starting the raft thread: {e}"))?;
        let me = Self { events, role, machine, id: config.id };
        if single {
            // Nobody to wait for: lead at once.
            let _ = me.events.send(Event::Campaign);
        }
        Ok(me)
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands a message from a peer to raft.
    pub fn step(&self, message: Message) {
        let _ = self.events.send(Event::Step(message));
    }

    /// Proposes a command; resolves with its output once applied here.
    pub async fn propose(&self, data: Vec<u8>) -> Result<M::Output, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Propose(data, tx)).map_err(|_| ProposeError::Stopped)?;
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Where this member stands now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A watch on the role.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Reads the state machine.
    pub fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        let guard = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// Stops the Ready loop.
    pub fn stop(&self) {
        let _ = self.events.send(Event::Stop);
    }
}

struct Driver<M: StateMachine> {
    node: RawNode<LogStorage>,
    storage: LogStorage,
    machine: Arc<Mutex<M>>,
    outbox: Outbox,
    pending: HashMap<u64, oneshot::Sender<Result<M::Output, ProposeError>>>,
    next_proposal: u64,
    /// Distinguishes this process's proposals from an earlier run's entries.
    incarnation: u64,
    role: watch::Sender<Role>,
    /// Term and first entry index of this member's current leadership.
    term_start: Option<(u64, u64)>,
    /// Snapshots sent, to report to raft once they had time to arrive.
    snapshot_reports: Vec<(u64, Instant)>,
    config: ReplicaConfig,
}

/// How long a sent snapshot is assumed in flight.
const SNAPSHOT_REPORT_DELAY: Duration = Duration::from_secs(1);

impl<M: StateMachine> Driver<M> {
    fn run(&mut self, rx: mpsc::Receiver<Event<M::Output>>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Take everything queued so one Ready (one fsync) covers it.
            let mut stop = false;
            for event in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match event {
                    Event::Step(m) => {
                        let _ = self.node.step(m);
                    }
                    Event::Propose(data, reply) => self.propose(data, reply),
                    Event::Campaign => {
                        let _ = self.node.campaign();
                    }
                    Event::Stop => stop = true,
                }
            }
            if stop {
                break;
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                self.report_snapshots();
                next_tick += self.config.tick;
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(raft_id = self.config.id, error = %e, "raft member stopping");
                break;
            }
            self.publish_role();
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
        self.role.send_modify(|r| {
            r.stopped = true;
            r.leader_ready = false;
        });
    }

    fn propose(&mut self, data: Vec<u8>, reply: oneshot::Sender<Result<M::Output, ProposeError>>) {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(ProposeError::NotLeader(self.node.raft.leader_id)));
            return;
        }
        self.next_proposal += 1;
        let mut context = self.incarnation.to_le_bytes().to_vec();
        context.extend_from_slice(&self.next_proposal.to_le_bytes());
        match self.node.propose(context, data) {
            Ok(()) => {
                self.pending.insert(self.next_proposal, reply);
            }
            Err(_) => {
                let _ = reply.send(Err(ProposeError::NotLeader(self.node.raft.leader_id)));
            }
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // raft-rs waits for a report before it resumes replication
                // to this follower; delivery is not observable here, so
                // report after a while: if the snapshot was lost, the next
                // append is rejected and a new snapshot goes out.
                self.snapshot_reports.push((m.to, Instant::now() + SNAPSHOT_REPORT_DELAY));
            }
            (self.outbox)(m);
        }
    }

    fn report_snapshots(&mut self) {
        let now = Instant::now();
        let node = &mut self.node;
        self.snapshot_reports.retain(|&(to, due)| {
            if due > now {
                return true;
            }
            node.report_snapshot(to, SnapshotStatus::Finish);
            false
        });
    }

    fn on_ready(&mut self) -> Result<(), LogError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            {
                let mut machine = self.machine.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = machine.restore(&snapshot.data) {
                    return Err(LogError::Corrupt { path: "<snapshot from the leader>".into(), reason: e });
                }
            }
            self.storage.apply_snapshot(snapshot)?;
        }
        self.apply(ready.take_committed_entries());
        self.storage.append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.storage.set_hardstate(hs.clone())?;
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.node.advance_apply();
        self.maybe_compact()
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut machine = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            // Empty entries (a new leader's first) and configuration changes
            // (membership is static) carry no command.
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let output = machine.apply(&entry.data);
            if let Some(seq) = self.own_proposal(&entry.context) {
                if let Some(reply) = self.pending.remove(&seq) {
                    let _ = reply.send(Ok(output));
                }
            }
        }
    }

    fn own_proposal(&self, context: &[u8]) -> Option<u64> {
        let (nonce, seq) = (context.get(..8)?, context.get(8..16)?);
        let nonce = u64::from_le_bytes(nonce.try_into().ok()?);
        (nonce == self.incarnation).then(|| u64::from_le_bytes(seq.try_into().unwrap_or_default()))
    }

    fn maybe_compact(&mut self) -> Result<(), LogError> {
        let applied = self.node.raft.raft_log.applied;
        let since = applied.saturating_sub(self.storage.snapshot_index());
        if since == 0 || (since < self.config.snapshot_entries && self.storage.log_bytes() < self.config.snapshot_bytes)
        {
            return Ok(());
        }
        let data = self.machine.lock().unwrap_or_else(|e| e.into_inner()).snapshot();
        // Membership is static: the conf state recorded at the start holds.
        let conf = self.storage.conf_state();
        self.storage.compact(applied, conf, data)
    }

    fn publish_role(&mut self) {
        let raft = &self.node.raft;
        let leading = raft.state == StateRole::Leader;
        if leading && self.term_start.map(|(term, _)| term) != Some(raft.term) {
            // become_leader appended an empty entry: once it is applied,
            // every entry of earlier terms is applied too.
            self.term_start = Some((raft.term, raft.raft_log.last_index()));
        }
        if !leading {
            self.term_start = None;
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(ProposeError::Unknown));
            }
        }
        let role = Role {
            term: raft.term,
            leader: raft.leader_id,
            leader_ready: self.term_start.is_some_and(|(_, start)| raft.raft_log.applied >= start),
            stopped: false,
        };
        self.role.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }
}
