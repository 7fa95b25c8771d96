//! Test helpers: a builder of synthetic BTF blobs, and an independent reading of the kernel's
//! BTF through `bpftool`'s text dump to cross-check with.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use super::{Btf, VMLINUX_BTF_PATH};

/// magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
const HEADER_LEN: u32 = 24;

/// The `kind` field of a type record's `info` word (btf.rst, "BTF Type Encoding").
pub(crate) mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const CONST: u32 = 10;
    pub const FUNC_PROTO: u32 = 13;
}

/// Builds BTF blobs type by type; ids are handed out in order from 1, as in the format.
pub(crate) struct BtfBuilder {
    words: Vec<u32>,
    strings: Vec<u8>,
    next_id: u32,
}

impl BtfBuilder {
    pub(crate) fn new() -> Self {
        Self {
            words: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    pub(crate) fn string(&mut self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(text.as_bytes());
        self.strings.push(0);
        offset
    }

    /// Appends a record and returns its type id.
    pub(crate) fn record(
        &mut self,
        name: &str,
        kind: u32,
        kind_flag: bool,
        vlen: u32,
        size_or_type: u32,
        extra: &[u32],
    ) -> u32 {
        let name_off = self.string(name);
        let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
        self.words.extend([name_off, info, size_or_type]);
        self.words.extend_from_slice(extra);
        self.next_id += 1;
        self.next_id - 1
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        self.record(name, kind::INT, false, 0, size, &[size * 8])
    }

    pub(crate) fn pointer(&mut self, target: u32) -> u32 {
        self.record("", kind::PTR, false, 0, target, &[])
    }

    pub(crate) fn array(&mut self, element: u32, index: u32, len: u32) -> u32 {
        self.record("", kind::ARRAY, false, 0, 0, &[element, index, len])
    }

    /// `members`: (name, type, bit offset).
    pub(crate) fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(name, kind::STRUCT, size, members)
    }

    pub(crate) fn union(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(name, kind::UNION, size, members)
    }

    fn composite(&mut self, name: &str, kind: u32, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let extra: Vec<u32> = members
            .iter()
            .flat_map(|&(name, type_id, bit_offset)| [self.string(name), type_id, bit_offset])
            .collect();
        self.record(name, kind, false, members.len() as u32, size, &extra)
    }

    /// A kind_flag struct; `members`: (name, type, bit offset, bitfield width).
    pub(crate) fn bitfield_struct(
        &mut self,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let extra: Vec<u32> = members
            .iter()
            .flat_map(|&(name, type_id, bit_offset, bits)| {
                [self.string(name), type_id, (bits << 24) | bit_offset]
            })
            .collect();
        self.record(name, kind::STRUCT, true, members.len() as u32, size, &extra)
    }

    pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.record(name, kind::TYPEDEF, false, 0, target, &[])
    }

    pub(crate) fn qualifier(&mut self, kind: u32, target: u32) -> u32 {
        self.record("", kind, false, 0, target, &[])
    }

    pub(crate) fn forward(&mut self, name: &str) -> u32 {
        self.record(name, kind::FWD, false, 0, 0, &[])
    }

    /// `typedef void (*btf_trace_NAME)(void *__data, PARAMS...)`, as the kernel declares
    /// each tracepoint.
    pub(crate) fn tracepoint(&mut self, name: &str, params: &[u32]) -> u32 {
        let void_pointer = self.pointer(0);
        let mut extra = vec![0, void_pointer];
        for &param in params {
            extra.extend([0, param]);
        }
        let vlen = params.len() as u32 + 1;
        let proto = self.record("", kind::FUNC_PROTO, false, vlen, 0, &extra);
        let pointer = self.pointer(proto);
        self.typedef(&format!("btf_trace_{name}"), pointer)
    }

    /// The blob, in this host's byte order: header, type section, string section.
    pub(crate) fn build(&self) -> Vec<u8> {
        let type_len = self.words.len() as u32 * 4;
        let mut bytes = Vec::new();
        bytes.extend(0xeb9f_u16.to_ne_bytes());
        bytes.extend([1, 0]); // version 1, no flags
        for field in [HEADER_LEN, 0, type_len, type_len, self.strings.len() as u32] {
            bytes.extend(field.to_ne_bytes());
        }
        for &word in &self.words {
            bytes.extend(word.to_ne_bytes());
        }
        bytes.extend(&self.strings);
        bytes
    }
}

/// One type as `bpftool btf dump file` prints it.
#[derive(Debug, Default)]
pub(crate) struct DumpedType {
    pub(crate) kind: String,
    /// Empty for bpftool's `(anon)`.
    pub(crate) name: String,
    /// The `size=`, `type_id=`, `nr_elems=`, `bits_offset=`, ... fields of the type's line.
    pub(crate) fields: HashMap<String, String>,
    pub(crate) members: Vec<DumpedMember>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DumpedMember {
    pub(crate) name: String,
    pub(crate) type_id: u32,
    pub(crate) bits_offset: u32,
    pub(crate) bitfield_size: u32,
}

impl DumpedType {
    pub(crate) fn field(&self, key: &str) -> Option<u32> {
        self.fields.get(key)?.parse().ok()
    }
}

/// The running kernel's BTF as read by this module, or `None` (with a note) when this
/// machine exposes none.
pub(crate) fn kernel_btf() -> Option<&'static Btf> {
    static BTF: OnceLock<Option<Btf>> = OnceLock::new();
    BTF.get_or_init(|| {
        if !std::path::Path::new(VMLINUX_BTF_PATH).exists() {
            assert!(
                std::env::var_os("CI").is_none_or(|ci| ci != "true"),
                "CI runs on a kernel with BTF, and {VMLINUX_BTF_PATH} is absent"
            );
            eprintln!(
                "skipping: {VMLINUX_BTF_PATH} is absent (kernel without CONFIG_DEBUG_INFO_BTF)"
            );
            return None;
        }
        Some(Btf::vmlinux().expect("the running kernel's BTF parses"))
    })
    .as_ref()
}

/// The running kernel's BTF as `bpftool` reads it, indexed by type id, or `None` (with a
/// note) when bpftool or the BTF is unavailable.
pub(crate) fn bpftool_dump() -> Option<&'static [DumpedType]> {
    static DUMP: OnceLock<Option<Vec<DumpedType>>> = OnceLock::new();
    DUMP.get_or_init(run_bpftool).as_deref()
}

fn run_bpftool() -> Option<Vec<DumpedType>> {
    kernel_btf()?;
    // `cargo xtask setup` installs bpftool: in CI a skipped cross-check is a failure.
    let skip = |why: String| {
        assert!(
            std::env::var_os("CI").is_none_or(|ci| ci != "true"),
            "the bpftool cross-check cannot run in CI: {why}"
        );
        eprintln!("skipping bpftool cross-check: {why}");
    };
    let output = match Command::new("bpftool")
        .args(["btf", "dump", "file", VMLINUX_BTF_PATH])
        .output()
    {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            skip(format!(
                "bpftool failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
            return None;
        }
        Err(error) => {
            skip(format!("cannot run bpftool: {error}"));
            return None;
        }
    };
    Some(parse_dump(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses lines such as `[114] STRUCT 'task_struct' size=3264 vlen=248` followed, for
/// structs and unions, by `\t'pid' type_id=21 bits_offset=12288` member lines.
fn parse_dump(text: &str) -> Vec<DumpedType> {
    let mut types = vec![DumpedType {
        kind: "VOID".to_owned(),
        ..DumpedType::default()
    }];
    for line in text.lines() {
        if let Some(member_line) = line.strip_prefix('\t') {
            let Some(current) = types.last_mut() else {
                continue;
            };
            if current.kind == "STRUCT" || current.kind == "UNION" {
                current.members.push(parse_dumped_member(member_line));
            }
            continue;
        }
        let (id, rest) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .expect("bpftool type line starts with [id]");
        assert_eq!(
            id.parse::<usize>().ok(),
            Some(types.len()),
            "bpftool ids are dense"
        );
        let (kind, rest) = rest.split_once(' ').expect("kind then name");
        let (name, fields) = split_quoted_name(rest);
        types.push(DumpedType {
            kind: kind.to_owned(),
            name,
            fields: parse_fields(fields),
            members: Vec::new(),
        });
    }
    types
}

fn parse_dumped_member(line: &str) -> DumpedMember {
    let (name, fields) = split_quoted_name(line);
    let fields = parse_fields(fields);
    let number = |key: &str| fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    DumpedMember {
        name,
        type_id: number("type_id"),
        bits_offset: number("bits_offset"),
        bitfield_size: number("bitfield_size"),
    }
}

/// `'name' rest` into the name (empty for `(anon)`) and the rest.
fn split_quoted_name(text: &str) -> (String, &str) {
    let quoted = text.strip_prefix('\'').expect("bpftool quotes names");
    let (name, rest) = quoted
        .split_once("' ")
        .or_else(|| quoted.strip_suffix('\'').map(|name| (name, "")))
        .expect("closing quote");
    let name = if name == "(anon)" { "" } else { name };
    (name.to_owned(), rest)
}

fn parse_fields(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|field| field.trim_end_matches(',').split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Resolves `path` over bpftool's dump, independently of [`Btf`]: the byte offset, if the
/// path leads to a byte-aligned member.
pub(crate) fn dumped_member_offset(dump: &[DumpedType], path: &str) -> Option<u32> {
    let mut parts = path.split('.');
    let struct_name = parts.next()?;
    let mut container = dump
        .iter()
        .position(|ty| ty.kind == "STRUCT" && ty.name == struct_name)?;
    let mut bits = 0;
    let mut parts = parts.peekable();
    while let Some(part) = parts.next() {
        let (member_bits, type_id) = dumped_find(dump, container, part)?;
        bits += member_bits;
        if parts.peek().is_some() {
            container = dumped_strip(dump, type_id);
        }
    }
    bits.is_multiple_of(8).then_some(bits / 8)
}

fn dumped_find(dump: &[DumpedType], container: usize, name: &str) -> Option<(u32, usize)> {
    dump.get(container)?.members.iter().find_map(|member| {
        if member.name == name {
            return Some((member.bits_offset, member.type_id as usize));
        }
        if !member.name.is_empty() {
            return None;
        }
        let inner = dumped_strip(dump, member.type_id as usize);
        let (bits, type_id) = dumped_find(dump, inner, name)?;
        Some((member.bits_offset + bits, type_id))
    })
}

fn dumped_strip(dump: &[DumpedType], mut id: usize) -> usize {
    while let Some(ty) = dump.get(id) {
        match ty.kind.as_str() {
            "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => {
                id = ty.field("type_id").unwrap_or(0) as usize;
            }
            _ => break,
        }
    }
    id
}
