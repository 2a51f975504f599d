//! Envelope and messages: a frame header, then every message type a peer
//! can send, from the same bytes (the decoder must refuse, never panic or
//! allocate past the limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_proto::frame::{decode_message, parse_header, read_frame};
use nexus_proto::messages::{ClientRequest, ClientResponse, CoordinatorMessage, WorkerMessage};

const LIMIT: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(data, LIMIT);
    let _ = read_frame(&mut &data[..], LIMIT);
    let _ = decode_message::<ClientRequest>("client request", data, LIMIT);
    let _ = decode_message::<ClientResponse>("client response", data, LIMIT);
    let _ = decode_message::<WorkerMessage>("worker message", data, LIMIT);
    let _ = decode_message::<CoordinatorMessage>("coordinator message", data, LIMIT);
});
