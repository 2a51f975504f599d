//! Nexus client library: talking to a coordinator ([`cluster`]) and the
//! `nexus demo` walkthrough ([`demo`]), which starts a whole cluster in one
//! process (coordinator and workers on loopback QUIC with mutual TLS).

pub mod cluster;
pub mod commands;
pub mod demo;
pub mod encoder;
pub mod infer;
pub mod packing;
pub mod scaling;
