//! Builds the eBPF programs (memtrace-ebpf) with nightly and bpf-linker, so that the userspace
//! binary embeds exactly the programs built from this tree.
use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "memtrace-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../memtrace-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default()).context(
        "building the eBPF programs (run `cargo xtask setup` for nightly and bpf-linker)",
    )?;

    // With AYA_BUILD_SKIP (model-only work and `cargo check` without the BPF toolchain) nothing
    // is built; an empty object keeps `include_bytes!` compiling, and loading it fails with a
    // clear message at run time.
    let object = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?).join("memtrace-probes");
    if !object.exists() {
        fs::write(&object, []).context("writing the placeholder eBPF object")?;
    }
    Ok(())
}
