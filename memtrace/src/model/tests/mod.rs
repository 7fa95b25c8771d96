//! The model driven by synthetic event streams; every layout is checked exactly.

mod attach;
mod heap;
mod impossible;
mod keyframe;
mod lifecycle;
mod mapping_ways;
mod mappings;
mod memfd;
mod throughput;
