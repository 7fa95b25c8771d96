//! The agent (`memtrace agent`): its consumer, flight recorder, triggers, captures, and the
//! fleet-facing HTTP server.

pub mod http;
pub mod http_handoff;
pub mod metrics;
pub mod metrics_bench;
