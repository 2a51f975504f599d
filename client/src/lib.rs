//! Nexus client library.
