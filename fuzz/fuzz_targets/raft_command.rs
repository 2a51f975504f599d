//! The coordinator's replicated state machine: a committed raft command
//! and a snapshot, as a peer (or a damaged disk) could deliver them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_coordinator::consensus::StateMachine;
use nexus_coordinator::replicated::Replicated;

fuzz_target!(|data: &[u8]| {
    let mut state = Replicated::default();
    let _ = state.apply(data);
    let _ = state.restore(data);
});
