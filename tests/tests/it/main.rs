//! The integration tests: one test binary, one module per feature, so the suite builds and
//! links once and the kernel matrix runs its smoke tests by their module paths
//! (`tracing::exact_counts::case_1_x86_64`).

mod agent;
mod backend;
mod containers;
mod deploy_files;
mod errors;
mod fidelity;
mod fleet;
mod folding;
mod growth;
mod hardening;
mod hardening_escape;
mod hardening_outputs;
mod hardening_replay;
mod jit_frames;
mod kernel_allocs;
mod layout;
mod mapping_ways;
mod pictures;
mod postgres;
mod recording;
mod replay_files;
mod reports_chromium;
mod reports_findings;
mod reports_postgres;
mod sshd;
mod stack_top;
mod stacks;
mod static_binary;
mod text_report;
mod tracing;
