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
        return Ok(());
    }
    strip_dwarf(&object)
}

/// Removes the DWARF sections (and their relocations) from the eBPF object. bpf-linker needs
/// the debug info to write BTF, and the loader reads only BTF (`.BTF`, `.BTF.ext`): the DWARF
/// is most of the object's bytes (5.7 of 7 MB), embedded in every memtrace binary for nothing.
fn strip_dwarf(object: &std::path::Path) -> anyhow::Result<()> {
    let data = fs::read(object).context("reading the eBPF object")?;
    let mut builder =
        object::build::elf::Builder::read(data.as_slice()).context("parsing the eBPF object")?;
    let is_dwarf = |name: &[u8]| {
        let name = name.strip_prefix(b".rel").unwrap_or(name);
        let name = name.strip_prefix(b"a").unwrap_or(name);
        name.starts_with(b".debug_")
    };
    for section in builder.sections.iter_mut() {
        if is_dwarf(section.name.as_slice()) {
            section.delete = true;
        }
    }
    // bpf-linker names the sections from the symbols' string table; the writer keeps section
    // names in a table of their own.
    let has_section_names = builder
        .sections
        .iter()
        .any(|section| matches!(section.data, object::build::elf::SectionData::SectionString));
    if !has_section_names {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = object::build::elf::SectionData::SectionString;
    }
    let mut stripped = Vec::with_capacity(data.len());
    builder
        .write(&mut stripped)
        .context("writing the stripped eBPF object")?;
    fs::write(object, stripped).context("replacing the eBPF object")?;
    Ok(())
}
