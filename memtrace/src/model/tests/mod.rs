//! The model driven by synthetic event streams; every layout is checked exactly.

mod heap;
mod impossible;
mod lifecycle;
mod mappings;
mod memfd;
mod snapshot;
mod throughput;
