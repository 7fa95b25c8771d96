//! `memtrace agent`: an always-on watcher of every process of a server (or of some cgroups),
//! with a flight recorder of recent history and triggers that save it when something goes
//! wrong.
//!
//! - [`mode`]: the agent's consumer, user mode's plus the flight recorder and the triggers;
//! - [`flight`]: the flight recorder, segments of recording that each start at a keyframe;
//! - [`triggers`] and [`growth`]: what fires, and the rate limit;
//! - [`capture`]: the capture directory and what a capture holds;
//! - [`kernel_watch`]: kernel memory watched from `/proc/meminfo`, and kernel mode run for a
//!   window when it rises with no process behind it;
//! - [`live`]: the loop that ties them to the probes and the signals;
//! - [`metrics`] and [`http`]: what a fleet reads of it (Prometheus' /metrics, the pprof
//!   endpoints of the continuous profilers), served on a thread of their own and answered
//!   from the model between batches ([`http_handoff`]).

pub mod capture;
pub mod flight;
pub mod growth;
pub mod http;
pub mod http_handoff;
pub mod kernel_watch;
pub mod live;
pub mod metrics;
pub mod metrics_bench;
pub mod mode;
pub mod scrape;
pub mod triggers;
pub mod workload;

#[cfg(test)]
mod tests;

pub use live::{run, AgentOptions, AgentTarget};
