//! A reader of the kernel's BTF (BPF Type Format), just enough of it to say where a struct
//! member lies, so that the eBPF programs read kernel structs at the offsets of the kernel they
//! run on rather than of the kernel they were built against.
//!
//! The format is the kernel's Documentation/bpf/btf.rst: a header, a type section of
//! variable-length records, and a section of NUL-terminated names. Type ids are implicit: the
//! n-th record is type n, and id 0 is `void`. Every read goes through a bounds check, so
//! malformed input is an error, never a panic.

use std::collections::HashMap;
use std::fmt;

/// Where the running kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const SUPPORTED_VERSION: u8 = 1;
/// magic, version, flags, hdr_len, type_off, type_len, str_off, str_len. A newer header may be
/// longer (`hdr_len` says so); its extra fields are not needed to find members.
const BASE_HEADER_LEN: usize = 24;
/// name_off, info, size-or-type: the part every type record starts with.
const TYPE_RECORD_LEN: usize = 12;
/// How many typedef/const/array/anonymous-member hops one lookup follows before concluding that
/// the type graph loops. Real kernels need a handful; only malformed BTF comes near this.
const MAX_TYPE_DEPTH: usize = 64;
/// How many structs and unions one member search may open. Without a cap, malformed BTF whose
/// anonymous members fan out without looping (each struct holding two of the next) would take
/// exponential time; the kernel's largest structs need a few dozen.
const MAX_SEARCHED_COMPOSITES: usize = 100_000;
/// BTF records no pointer size; like libbpf, take it from `long`, which is pointer-wide on every
/// ABI Linux supports. These are the spellings compilers emit for it.
const LONG_TYPE_NAMES: [&[u8]; 4] = [b"long int", b"long unsigned int", b"long", b"unsigned long"];

/// The `kind` field of a type record's `info` word (btf.rst, "BTF Type Encoding").
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {path} (is the kernel built with CONFIG_DEBUG_INFO_BTF?): {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("BTF is {len} bytes long, too short for its {needed}-byte header")]
    TruncatedHeader { len: usize, needed: usize },
    #[error("not BTF: the magic number is {found:#06x}, expected 0xeb9f")]
    BadMagic { found: u16 },
    #[error("unsupported BTF version {0} (only version 1 exists)")]
    UnsupportedVersion(u8),
    #[error("BTF header length {0} is shorter than the 24-byte base header")]
    HeaderTooShort(u32),
    #[error("BTF {section} section (offset {offset}, length {len}) runs past the {available} bytes that follow the header")]
    SectionOutOfBounds {
        section: &'static str,
        offset: u32,
        len: u32,
        available: usize,
    },
    #[error("BTF string section is malformed: {0}")]
    BadStringSection(&'static str),
    #[error("BTF type {id} is truncated: its record needs bytes {start}..{end} of the {len}-byte type section")]
    TruncatedType {
        id: usize,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: usize, kind: u32 },
    #[error("BTF type {id} names string offset {offset}, outside the {len}-byte string section")]
    StringOutOfRange { id: usize, offset: u32, len: usize },
    #[error("invalid member path '{0}': expected 'struct_name.member[.member...]'")]
    BadPath(String),
    #[error("kernel BTF has no struct {name} (resolving '{path}')")]
    NoSuchStruct { name: String, path: String },
    #[error("kernel BTF has no member '{member}' in {container} (resolving '{path}')")]
    NoSuchMember {
        member: String,
        container: String,
        path: String,
    },
    #[error("kernel BTF has several structs named {name} that place '{path}' differently")]
    AmbiguousStruct { name: String, path: String },
    #[error("cannot resolve '{path}': member '{member}' is {found}, not a struct or union, so it has no member '{next}'")]
    NotComposite {
        path: String,
        member: String,
        found: String,
        next: String,
    },
    #[error("cannot resolve '{path}': member '{member}' is a bitfield, which has no byte offset")]
    Bitfield { path: String, member: String },
    #[error("cannot resolve '{path}': it starts at bit {bit_offset}, not on a byte boundary")]
    NotByteAligned { path: String, bit_offset: u64 },
    #[error("cannot resolve '{path}': its byte offset or size does not fit in 32 bits")]
    Overflow { path: String },
    #[error("cannot resolve '{path}': BTF refers to type {id}, but the last type is {last}")]
    TypeOutOfRange { path: String, id: u32, last: usize },
    #[error("cannot resolve '{path}': the types around type {id} nest too deeply or too widely (a loop in malformed BTF?)")]
    TooComplex { path: String, id: u32 },
    #[error("cannot resolve '{path}': it is {what}, which has no size")]
    Unsized { path: String, what: String },
    #[error("kernel field '{path}' is {found}, but the eBPF programs read it as {expected}")]
    UnexpectedLayout {
        path: String,
        found: String,
        expected: String,
    },
}

/// Where a member lies within its outermost struct, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLayout {
    /// Bytes from the start of the struct named first in the path.
    pub offset: u32,
    /// Bytes the member occupies.
    pub size: u32,
    /// The member's type, with typedefs and qualifiers looked through.
    pub kind: ValueKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Integer,
    Enum,
    Float,
    Pointer,
    Struct,
    Union,
    Array { element_size: u32, len: u32 },
}

/// The kernel's types, as far as member lookups need them.
pub struct Btf {
    /// Indexed by type id; entry 0 is `void`.
    types: Vec<Type>,
    /// The members of every struct and union, each composite owning one contiguous run.
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Only STRUCT records: a FWD declaration of the same name has no members to find.
    structs_by_name: HashMap<Box<[u8]>, Vec<u32>>,
    pointer_size: u32,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("named_structs", &self.structs_by_name.len())
            .field("string_bytes", &self.strings.len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Void,
    Int {
        size: u32,
        bits: u32,
        bit_offset: u32,
    },
    Pointer {
        target: u32,
    },
    Array {
        element: u32,
        len: u32,
    },
    Struct(Composite),
    Union(Composite),
    Enum {
        size: u32,
    },
    Enum64 {
        size: u32,
    },
    Forward,
    Typedef(u32),
    Volatile(u32),
    Const(u32),
    Restrict(u32),
    TypeTag(u32),
    Function,
    /// Its parameters are kept like members (no offsets): tracepoint prototypes need them.
    FunctionProto(Composite),
    Variable,
    DataSection,
    DeclTag,
    Float {
        size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Composite {
    size: u32,
    first_member: usize,
    member_count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Non-zero only for a bitfield in a struct whose record sets kind_flag.
    bitfield_bits: u32,
}

/// A member found by name, with its offset from the container that was searched (which may
/// differ from its own container when it sits in an anonymous struct or union).
#[derive(Debug, Clone, Copy)]
struct FoundMember {
    type_id: u32,
    bit_offset: u64,
    bitfield_bits: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    fn u16(self, bytes: [u8; 2]) -> u16 {
        match self {
            Self::Little => u16::from_le_bytes(bytes),
            Self::Big => u16::from_be_bytes(bytes),
        }
    }

    fn u32(self, bytes: [u8; 4]) -> u32 {
        match self {
            Self::Little => u32::from_le_bytes(bytes),
            Self::Big => u32::from_be_bytes(bytes),
        }
    }

    /// The `n`-th 32-bit word of `bytes`, if there is one.
    fn word(self, bytes: &[u8], n: usize) -> Option<u32> {
        let start = n.checked_mul(4)?;
        let word = bytes.get(start..start.checked_add(4)?)?;
        Some(self.u32(word.try_into().ok()?))
    }
}

struct Header {
    order: ByteOrder,
    header_len: u32,
    type_off: u32,
    type_len: u32,
    str_off: u32,
    str_len: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let base: &[u8; BASE_HEADER_LEN] = bytes
            .get(..BASE_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(BtfError::TruncatedHeader {
                len: bytes.len(),
                needed: BASE_HEADER_LEN,
            })?;
        // The magic is written in the producer's byte order, which is how a reader tells it.
        let order = match [base[0], base[1]] {
            magic if ByteOrder::Little.u16(magic) == MAGIC => ByteOrder::Little,
            magic if ByteOrder::Big.u16(magic) == MAGIC => ByteOrder::Big,
            magic => {
                return Err(BtfError::BadMagic {
                    found: ByteOrder::Little.u16(magic),
                })
            }
        };
        let version = base[2];
        if version != SUPPORTED_VERSION {
            return Err(BtfError::UnsupportedVersion(version));
        }
        // base[3] holds flags, which no version defines yet.
        let word = |n| order.u32([base[n], base[n + 1], base[n + 2], base[n + 3]]);
        let header = Self {
            order,
            header_len: word(4),
            type_off: word(8),
            type_len: word(12),
            str_off: word(16),
            str_len: word(20),
        };
        if (header.header_len as usize) < BASE_HEADER_LEN {
            return Err(BtfError::HeaderTooShort(header.header_len));
        }
        if header.header_len as usize > bytes.len() {
            return Err(BtfError::TruncatedHeader {
                len: bytes.len(),
                needed: header.header_len as usize,
            });
        }
        Ok(header)
    }
}

/// One of the sections that follow the header; its offset counts from the header's end.
fn section<'a>(
    data: &'a [u8],
    name: &'static str,
    offset: u32,
    len: u32,
) -> Result<&'a [u8], BtfError> {
    let out_of_bounds = || BtfError::SectionOutOfBounds {
        section: name,
        offset,
        len,
        available: data.len(),
    };
    let start = offset as usize;
    let end = start.checked_add(len as usize).ok_or_else(out_of_bounds)?;
    data.get(start..end).ok_or_else(out_of_bounds)
}

/// The kernel refuses string sections that do not start and end with NUL; checking the same
/// here means every in-range name offset has a terminator, so names need no further checks.
fn check_strings(strings: &[u8]) -> Result<(), BtfError> {
    match (strings.first(), strings.last()) {
        (None, _) => Err(BtfError::BadStringSection(
            "it is empty, but offset 0 must be the empty name",
        )),
        (Some(&first), _) if first != 0 => Err(BtfError::BadStringSection(
            "it does not start with NUL, so offset 0 is not the empty name",
        )),
        (_, Some(&last)) if last != 0 => Err(BtfError::BadStringSection(
            "its last string is not NUL-terminated",
        )),
        _ => Ok(()),
    }
}

/// Bytes that follow the 12-byte common record for a type of this kind with `vlen` entries
/// (btf.rst, section 2.2). Getting any of these wrong shifts every later type id, so each kind
/// is listed, including those member lookups never look at.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // u32 encoding (bits, offset, signedness).
        kind::INT => 4,
        // struct btf_array { type, index_type, nelems }.
        kind::ARRAY => 12,
        // struct btf_member { name_off, type, offset } each.
        kind::STRUCT | kind::UNION => 12 * vlen,
        // struct btf_enum { name_off, val } each.
        kind::ENUM => 8 * vlen,
        // struct btf_param { name_off, type } each.
        kind::FUNC_PROTO => 8 * vlen,
        // struct btf_var { linkage }.
        kind::VAR => 4,
        // struct btf_var_secinfo { type, offset, size } each.
        kind::DATASEC => 12 * vlen,
        // struct btf_decl_tag { component_idx }.
        kind::DECL_TAG => 4,
        // struct btf_enum64 { name_off, val_lo32, val_hi32 } each.
        kind::ENUM64 => 12 * vlen,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

/// The fields of a type record that every kind shares.
struct RecordHead {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
}

impl RecordHead {
    fn decode(bytes: &[u8], order: ByteOrder) -> Option<Self> {
        let info = order.word(bytes, 1)?;
        Some(Self {
            name_off: order.word(bytes, 0)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: order.word(bytes, 2)?,
        })
    }
}

/// Decodes the type section into `types` (after `void`) and the members of every composite.
fn parse_types(section: &[u8], order: ByteOrder) -> Result<(Vec<Type>, Vec<Member>), BtfError> {
    let void = Type {
        name_off: 0,
        kind: Kind::Void,
    };
    let mut types = vec![void];
    let mut members = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let id = types.len();
        let truncated = |end: usize| BtfError::TruncatedType {
            id,
            start: at,
            end,
            len: section.len(),
        };
        let head_end = at + TYPE_RECORD_LEN;
        let head = section
            .get(at..head_end)
            .and_then(|bytes| RecordHead::decode(bytes, order))
            .ok_or_else(|| truncated(head_end))?;
        let extra_len = trailing_len(head.kind, head.vlen).ok_or(BtfError::UnknownKind {
            id,
            kind: head.kind,
        })?;
        let end = head_end + extra_len;
        let extra = section.get(head_end..end).ok_or_else(|| truncated(end))?;
        let kind = decode_kind(&head, extra, order, &mut members).ok_or_else(|| truncated(end))?;
        types.push(Type {
            name_off: head.name_off,
            kind,
        });
        at = end;
    }
    Ok((types, members))
}

/// Turns one record into a [`Kind`]; `None` only if `extra` is shorter than its kind needs,
/// which [`trailing_len`] already rules out.
fn decode_kind(
    head: &RecordHead,
    extra: &[u8],
    order: ByteOrder,
    members: &mut Vec<Member>,
) -> Option<Kind> {
    let size = head.size_or_type;
    let target = head.size_or_type;
    Some(match head.kind {
        kind::INT => {
            let encoding = order.word(extra, 0)?;
            Kind::Int {
                size,
                bits: encoding & 0xff,
                bit_offset: (encoding >> 16) & 0xff,
            }
        }
        kind::PTR => Kind::Pointer { target },
        kind::ARRAY => Kind::Array {
            element: order.word(extra, 0)?,
            len: order.word(extra, 2)?,
        },
        kind::STRUCT => Kind::Struct(decode_members(head, extra, order, members)?),
        kind::UNION => Kind::Union(decode_members(head, extra, order, members)?),
        kind::ENUM => Kind::Enum { size },
        kind::ENUM64 => Kind::Enum64 { size },
        kind::FWD => Kind::Forward,
        kind::TYPEDEF => Kind::Typedef(target),
        kind::VOLATILE => Kind::Volatile(target),
        kind::CONST => Kind::Const(target),
        kind::RESTRICT => Kind::Restrict(target),
        kind::TYPE_TAG => Kind::TypeTag(target),
        kind::FUNC => Kind::Function,
        kind::FUNC_PROTO => Kind::FunctionProto(decode_params(head, extra, order, members)?),
        kind::VAR => Kind::Variable,
        kind::DATASEC => Kind::DataSection,
        kind::DECL_TAG => Kind::DeclTag,
        kind::FLOAT => Kind::Float { size },
        _ => return None,
    })
}

/// A FUNC_PROTO's `struct btf_param { name_off, type }` records, kept as offset-less members.
fn decode_params(
    head: &RecordHead,
    extra: &[u8],
    order: ByteOrder,
    members: &mut Vec<Member>,
) -> Option<Composite> {
    let first_member = members.len();
    for record in extra.chunks_exact(8) {
        members.push(Member {
            name_off: order.word(record, 0)?,
            type_id: order.word(record, 1)?,
            bit_offset: 0,
            bitfield_bits: 0,
        });
    }
    Some(Composite {
        size: 0,
        first_member,
        member_count: head.vlen,
    })
}

fn decode_members(
    head: &RecordHead,
    extra: &[u8],
    order: ByteOrder,
    members: &mut Vec<Member>,
) -> Option<Composite> {
    let first_member = members.len();
    for record in extra.chunks_exact(12) {
        let offset = order.word(record, 2)?;
        // With kind_flag set the offset word packs a bitfield width above a 24-bit bit offset;
        // without it, bitfields are told apart by their INT type instead.
        let (bit_offset, bitfield_bits) = if head.kind_flag {
            (offset & 0x00ff_ffff, offset >> 24)
        } else {
            (offset, 0)
        };
        members.push(Member {
            name_off: order.word(record, 0)?,
            type_id: order.word(record, 1)?,
            bit_offset,
            bitfield_bits,
        });
    }
    Some(Composite {
        size: head.size_or_type,
        first_member,
        member_count: head.vlen,
    })
}

/// Checks every name this reader keeps against the string section, so later lookups can rely
/// on them and a corrupt offset is reported where it is, not as a missing member later.
fn check_names(types: &[Type], members: &[Member], strings: &[u8]) -> Result<(), BtfError> {
    let check = |id: usize, offset: u32| {
        if (offset as usize) < strings.len() {
            Ok(())
        } else {
            Err(BtfError::StringOutOfRange {
                id,
                offset,
                len: strings.len(),
            })
        }
    };
    for (id, ty) in types.iter().enumerate() {
        check(id, ty.name_off)?;
        if let Kind::Struct(composite) | Kind::Union(composite) = ty.kind {
            let own = members
                .get(composite.first_member..)
                .unwrap_or_default()
                .iter()
                .take(composite.member_count);
            for member in own {
                check(id, member.name_off)?;
            }
        }
    }
    Ok(())
}

/// A NUL-terminated name at `offset`; empty when out of range, which [`check_names`] has
/// already ruled out for every offset this reader keeps.
fn name_at(strings: &[u8], offset: u32) -> &[u8] {
    let tail = strings.get(offset as usize..).unwrap_or_default();
    tail.split(|&byte| byte == 0).next().unwrap_or_default()
}

fn index_structs(types: &[Type], strings: &[u8]) -> HashMap<Box<[u8]>, Vec<u32>> {
    let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
    for (id, ty) in types.iter().enumerate() {
        let name = name_at(strings, ty.name_off);
        if matches!(ty.kind, Kind::Struct(_)) && !name.is_empty() {
            if let Ok(id) = u32::try_from(id) {
                index.entry(name.into()).or_default().push(id);
            }
        }
    }
    index
}

fn pointer_size(types: &[Type], strings: &[u8]) -> u32 {
    types
        .iter()
        .find_map(|ty| match ty.kind {
            Kind::Int { size, .. } if LONG_TYPE_NAMES.contains(&name_at(strings, ty.name_off)) => {
                Some(size)
            }
            _ => None,
        })
        // A BTF without `long` is not a kernel's; for it, this host's width is the best guess.
        .unwrap_or(std::mem::size_of::<usize>() as u32)
}

/// Splits `"task_struct.thread_info.status"` into the struct name and the member names.
fn split_path(path: &str) -> Result<(&str, Vec<&str>), BtfError> {
    let mut parts = path.split('.');
    let struct_name = parts.next().unwrap_or_default();
    let members: Vec<&str> = parts.collect();
    if struct_name.is_empty() || members.is_empty() || members.iter().any(|m| m.is_empty()) {
        return Err(BtfError::BadPath(path.to_owned()));
    }
    Ok((struct_name, members))
}

impl Btf {
    /// Reads the running kernel's BTF from [`VMLINUX_BTF_PATH`].
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        let bytes = std::fs::read(VMLINUX_BTF_PATH).map_err(|source| BtfError::Read {
            path: VMLINUX_BTF_PATH,
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses a standalone BTF blob such as `/sys/kernel/btf/vmlinux`. (Module BTF is "split"
    /// BTF whose ids continue vmlinux's, and cannot be read on its own.)
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let header = Header::parse(bytes)?;
        let data = bytes.get(header.header_len as usize..).unwrap_or_default();
        let type_section = section(data, "type", header.type_off, header.type_len)?;
        let strings = section(data, "string", header.str_off, header.str_len)?;
        check_strings(strings)?;
        let (types, members) = parse_types(type_section, header.order)?;
        check_names(&types, &members, strings)?;
        Ok(Btf {
            structs_by_name: index_structs(&types, strings),
            pointer_size: pointer_size(&types, strings),
            types,
            members,
            strings: strings.to_vec(),
        })
    }

    /// Byte offset of the last member of `path` (e.g. `"dentry.d_name.name"`) from the start of
    /// the struct named first, looking through anonymous structs and unions, typedefs and
    /// qualifiers on the way.
    #[allow(
        dead_code,
        reason = "reader API; kernel_offsets needs the full `member` layout"
    )]
    pub fn member_offset(&self, path: &str) -> Result<u32, BtfError> {
        Ok(self.member(path)?.offset)
    }

    /// Size in bytes of the last member of `path`.
    #[allow(
        dead_code,
        reason = "reader API; kernel_offsets needs the full `member` layout"
    )]
    pub fn member_size(&self, path: &str) -> Result<u32, BtfError> {
        Ok(self.member(path)?.size)
    }

    /// Offset, size and kind of the last member of `path`.
    pub fn member(&self, path: &str) -> Result<MemberLayout, BtfError> {
        let (struct_name, member_names) = split_path(path)?;
        let candidates = self
            .structs_by_name
            .get(struct_name.as_bytes())
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Unrelated structs may share a name (a driver's private `struct console`, say). The
        // answer stands only if every candidate that has the member agrees where it is.
        let mut answer: Option<MemberLayout> = None;
        let mut first_error = None;
        for &id in candidates {
            match self.resolve_in_struct(id, &member_names, path) {
                Ok(layout) if answer.is_some_and(|earlier| earlier != layout) => {
                    return Err(BtfError::AmbiguousStruct {
                        name: struct_name.to_owned(),
                        path: path.to_owned(),
                    });
                }
                Ok(layout) => answer = Some(layout),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match (answer, first_error) {
            (Some(layout), _) => Ok(layout),
            (None, Some(error)) => Err(error),
            (None, None) => Err(BtfError::NoSuchStruct {
                name: struct_name.to_owned(),
                path: path.to_owned(),
            }),
        }
    }

    fn resolve_in_struct(
        &self,
        struct_id: u32,
        member_names: &[&str],
        path: &str,
    ) -> Result<MemberLayout, BtfError> {
        let mut container = struct_id;
        let mut bit_offset = 0u64;
        let mut names = member_names.iter().peekable();
        while let Some(&name) = names.next() {
            let found = self.find_member(container, name, path)?;
            bit_offset += found.bit_offset;
            match names.peek() {
                Some(&&next) => container = self.composite_behind(&found, name, next, path)?,
                None => return self.layout(&found, bit_offset, name, path),
            }
        }
        Err(BtfError::BadPath(path.to_owned()))
    }

    fn find_member(&self, container: u32, name: &str, path: &str) -> Result<FoundMember, BtfError> {
        let mut budget = MAX_SEARCHED_COMPOSITES;
        self.search_members(container, name.as_bytes(), path, 0, &mut budget)?
            .ok_or_else(|| BtfError::NoSuchMember {
                member: name.to_owned(),
                container: self.describe(container),
                path: path.to_owned(),
            })
    }

    /// Looks for `name` among the members of the struct or union `container`, and among those of
    /// its anonymous struct and union members, which C lets one name as the container's own.
    fn search_members(
        &self,
        container: u32,
        name: &[u8],
        path: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Option<FoundMember>, BtfError> {
        *budget = budget.saturating_sub(1);
        if depth > MAX_TYPE_DEPTH || *budget == 0 {
            return Err(BtfError::TooComplex {
                path: path.to_owned(),
                id: container,
            });
        }
        for member in self.members_of(container, path)? {
            let member_name = name_at(&self.strings, member.name_off);
            if member_name == name {
                return Ok(Some(FoundMember {
                    type_id: member.type_id,
                    bit_offset: u64::from(member.bit_offset),
                    bitfield_bits: member.bitfield_bits,
                }));
            }
            if !member_name.is_empty() {
                continue;
            }
            // Unnamed members that are not structs or unions are padding (`long: 64;`).
            let inner = self.strip_qualifiers(member.type_id, path)?;
            if !self.is_composite(inner, path)? {
                continue;
            }
            if let Some(mut found) = self.search_members(inner, name, path, depth + 1, budget)? {
                found.bit_offset += u64::from(member.bit_offset);
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The members of a struct or union; none for other kinds, which callers never pass.
    fn members_of(&self, container: u32, path: &str) -> Result<&[Member], BtfError> {
        Ok(match self.kind(container, path)? {
            Kind::Struct(composite) | Kind::Union(composite) => {
                let end = composite.first_member + composite.member_count;
                self.members
                    .get(composite.first_member..end)
                    .unwrap_or_default()
            }
            _ => &[],
        })
    }

    /// The struct or union a member must be for the path to go on into it.
    fn composite_behind(
        &self,
        found: &FoundMember,
        member: &str,
        next: &str,
        path: &str,
    ) -> Result<u32, BtfError> {
        let inner = self.strip_qualifiers(found.type_id, path)?;
        if self.is_composite(inner, path)? {
            Ok(inner)
        } else {
            Err(BtfError::NotComposite {
                path: path.to_owned(),
                member: member.to_owned(),
                found: self.describe(inner),
                next: next.to_owned(),
            })
        }
    }

    fn layout(
        &self,
        found: &FoundMember,
        bit_offset: u64,
        member: &str,
        path: &str,
    ) -> Result<MemberLayout, BtfError> {
        let type_id = self.strip_qualifiers(found.type_id, path)?;
        if found.bitfield_bits != 0 || self.is_int_bitfield(type_id, path)? {
            return Err(BtfError::Bitfield {
                path: path.to_owned(),
                member: member.to_owned(),
            });
        }
        if !bit_offset.is_multiple_of(8) {
            return Err(BtfError::NotByteAligned {
                path: path.to_owned(),
                bit_offset,
            });
        }
        let offset = u32::try_from(bit_offset / 8).map_err(|_| BtfError::Overflow {
            path: path.to_owned(),
        })?;
        let (size, kind) = self.value_layout(type_id, path, 0)?;
        Ok(MemberLayout { offset, size, kind })
    }

    /// Size and kind of a type, looking through typedefs and qualifiers.
    fn value_layout(
        &self,
        id: u32,
        path: &str,
        depth: usize,
    ) -> Result<(u32, ValueKind), BtfError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(BtfError::TooComplex {
                path: path.to_owned(),
                id,
            });
        }
        let unsized_value = || BtfError::Unsized {
            path: path.to_owned(),
            what: self.describe(id),
        };
        Ok(match self.kind(id, path)? {
            Kind::Int { size, .. } => (size, ValueKind::Integer),
            Kind::Enum { size } | Kind::Enum64 { size } => (size, ValueKind::Enum),
            Kind::Float { size } => (size, ValueKind::Float),
            Kind::Pointer { .. } => (self.pointer_size, ValueKind::Pointer),
            Kind::Struct(composite) => (composite.size, ValueKind::Struct),
            Kind::Union(composite) => (composite.size, ValueKind::Union),
            Kind::Array { element, len } => {
                let (element_size, _) = self.value_layout(element, path, depth + 1)?;
                let size = element_size.checked_mul(len).ok_or(BtfError::Overflow {
                    path: path.to_owned(),
                })?;
                (size, ValueKind::Array { element_size, len })
            }
            Kind::Typedef(target)
            | Kind::Volatile(target)
            | Kind::Const(target)
            | Kind::Restrict(target)
            | Kind::TypeTag(target) => self.value_layout(target, path, depth + 1)?,
            Kind::Void
            | Kind::Forward
            | Kind::Function
            | Kind::FunctionProto(_)
            | Kind::Variable
            | Kind::DataSection
            | Kind::DeclTag => return Err(unsized_value()),
        })
    }

    /// Old BTF (kind_flag clear) marks a bitfield only by giving it an INT type narrower than
    /// its storage.
    fn is_int_bitfield(&self, id: u32, path: &str) -> Result<bool, BtfError> {
        Ok(match self.kind(id, path)? {
            Kind::Int {
                size,
                bits,
                bit_offset,
            } => bit_offset != 0 || u64::from(bits) != u64::from(size) * 8,
            _ => false,
        })
    }

    /// Follows typedefs and const/volatile/restrict/type-tag qualifiers to the type they name.
    fn strip_qualifiers(&self, mut id: u32, path: &str) -> Result<u32, BtfError> {
        for _ in 0..MAX_TYPE_DEPTH {
            match self.kind(id, path)? {
                Kind::Typedef(target)
                | Kind::Volatile(target)
                | Kind::Const(target)
                | Kind::Restrict(target)
                | Kind::TypeTag(target) => id = target,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooComplex {
            path: path.to_owned(),
            id,
        })
    }

    fn is_composite(&self, id: u32, path: &str) -> Result<bool, BtfError> {
        Ok(matches!(
            self.kind(id, path)?,
            Kind::Struct(_) | Kind::Union(_)
        ))
    }

    fn kind(&self, id: u32, path: &str) -> Result<Kind, BtfError> {
        self.types
            .get(id as usize)
            .map(|ty| ty.kind)
            .ok_or_else(|| BtfError::TypeOutOfRange {
                path: path.to_owned(),
                id,
                last: self.types.len().saturating_sub(1),
            })
    }

    fn name(&self, id: u32) -> String {
        let name_off = self.types.get(id as usize).map_or(0, |ty| ty.name_off);
        String::from_utf8_lossy(name_at(&self.strings, name_off)).into_owned()
    }

    /// A type as error messages name it: `struct task_struct`, `anonymous union`, `a pointer`.
    fn describe(&self, id: u32) -> String {
        let name = self.name(id);
        let named = |keyword: &str| {
            if name.is_empty() {
                format!("anonymous {keyword} (type {id})")
            } else {
                format!("{keyword} {name}")
            }
        };
        match self.types.get(id as usize).map(|ty| ty.kind) {
            None => format!("missing type {id}"),
            Some(Kind::Void) => "void".to_owned(),
            Some(Kind::Int { size, .. }) => format!("an integer of {size} bytes ({name})"),
            Some(Kind::Pointer { .. }) => "a pointer".to_owned(),
            Some(Kind::Array { len, .. }) => format!("an array of {len} elements"),
            Some(Kind::Struct(_)) => named("struct"),
            Some(Kind::Union(_)) => named("union"),
            Some(Kind::Enum { .. } | Kind::Enum64 { .. }) => named("enum"),
            Some(Kind::Forward) => format!("a forward declaration of {name}"),
            Some(Kind::Typedef(_)) => format!("typedef {name}"),
            Some(Kind::Volatile(_) | Kind::Const(_) | Kind::Restrict(_) | Kind::TypeTag(_)) => {
                "a qualified type".to_owned()
            }
            Some(Kind::Function | Kind::FunctionProto(_)) => "a function".to_owned(),
            Some(Kind::Variable) => format!("variable {name}"),
            Some(Kind::DataSection) => format!("data section {name}"),
            Some(Kind::DeclTag) => format!("declaration tag {name}"),
            Some(Kind::Float { size }) => format!("a float of {size} bytes"),
        }
    }
}

/// Tracepoint prototypes (`btf_trace_<name>`), for kernel mode.
pub mod tracepoints;

/// Test helpers shared with `offsets.rs`: a builder of synthetic BTF blobs, and an independent
/// reading of the kernel's BTF through `bpftool`'s text dump to cross-check this parser with.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::process::Command;
    use std::sync::OnceLock;

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
        pub(crate) fn structure(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            self.composite(name, kind::STRUCT, size, members)
        }

        pub(crate) fn union(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(name, kind::UNION, size, members)
        }

        fn composite(
            &mut self,
            name: &str,
            kind: u32,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
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

        pub(crate) fn build(&self) -> Vec<u8> {
            self.build_in(ByteOrder::Little)
        }

        pub(crate) fn build_big_endian(&self) -> Vec<u8> {
            self.build_in(ByteOrder::Big)
        }

        fn build_in(&self, order: ByteOrder) -> Vec<u8> {
            let u32_bytes = |value: u32| match order {
                ByteOrder::Little => value.to_le_bytes(),
                ByteOrder::Big => value.to_be_bytes(),
            };
            let magic = match order {
                ByteOrder::Little => MAGIC.to_le_bytes(),
                ByteOrder::Big => MAGIC.to_be_bytes(),
            };
            let type_len = self.words.len() as u32 * 4;
            let mut bytes = Vec::new();
            bytes.extend(magic);
            bytes.extend([SUPPORTED_VERSION, 0]);
            for field in [
                BASE_HEADER_LEN as u32,
                0,
                type_len,
                type_len,
                self.strings.len() as u32,
            ] {
                bytes.extend(u32_bytes(field));
            }
            for &word in &self.words {
                bytes.extend(u32_bytes(word));
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
            Some(Btf::from_sys_fs().expect("the running kernel's BTF parses"))
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
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    /// The parts of a `struct qstr`/`struct dentry` pair shaped like the kernel's: the names sit
    /// behind an anonymous union, a const qualifier and a typedef.
    fn dentry_like() -> BtfBuilder {
        let mut b = BtfBuilder::new();
        let u32_t = b.int("unsigned int", 4);
        let u64_t = b.int("long long unsigned int", 8);
        let uchar = b.int("unsigned char", 1);
        let name_ptr = b.pointer(uchar);
        let hash_len = b.structure("", 8, &[("hash", u32_t, 0), ("len", u32_t, 32)]);
        let hash_union = b.union("", 8, &[("", hash_len, 0), ("hash_len", u64_t, 0)]);
        let qstr = b.structure("qstr", 16, &[("", hash_union, 0), ("name", name_ptr, 64)]);
        let const_qstr = b.qualifier(kind::CONST, qstr);
        let name_union = b.union("", 16, &[("__d_name", qstr, 0), ("d_name", const_qstr, 0)]);
        let u32_typedef = b.typedef("u32", u32_t);
        b.forward("dentry");
        b.structure(
            "dentry",
            40,
            &[
                ("d_flags", u32_typedef, 0),
                ("", name_union, 64),
                ("d_parent", name_ptr, 256),
            ],
        );
        b
    }

    fn parsed(builder: &BtfBuilder) -> Btf {
        Btf::parse(&builder.build()).expect("synthetic BTF parses")
    }

    #[test]
    fn resolves_through_anonymous_unions_typedefs_and_qualifiers() {
        let btf = parsed(&dentry_like());
        assert_eq!(btf.member_offset("dentry.d_name.name").unwrap(), 16);
        assert_eq!(btf.member_offset("dentry.d_name.len").unwrap(), 12);
        assert_eq!(btf.member_offset("qstr.hash_len").unwrap(), 0);
        assert_eq!(btf.member_offset("dentry.d_parent").unwrap(), 32);
        let flags = btf.member("dentry.d_flags").unwrap();
        assert_eq!(
            (flags.offset, flags.size, flags.kind),
            (0, 4, ValueKind::Integer)
        );
        let name = btf.member("dentry.d_name.name").unwrap();
        assert_eq!((name.size, name.kind), (8, ValueKind::Pointer));
        assert_eq!(btf.member_size("dentry.d_name").unwrap(), 16);
    }

    #[test]
    fn struct_lookup_ignores_forward_declarations() {
        // dentry_like declares `struct dentry` as FWD before defining it.
        let btf = parsed(&dentry_like());
        assert_eq!(
            btf.structs_by_name.get(&b"dentry"[..]).map(Vec::len),
            Some(1)
        );
        let mut only_forward = BtfBuilder::new();
        only_forward.forward("task_struct");
        let error = parsed(&only_forward)
            .member_offset("task_struct.pid")
            .unwrap_err();
        assert!(matches!(error, BtfError::NoSuchStruct { .. }), "{error}");
    }

    #[test]
    fn structs_sharing_a_name_must_agree() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.structure("console", 8, &[("x", int, 0), ("index", int, 32)]);
        b.structure("console", 8, &[("x", int, 32), ("flags", int, 0)]);
        let btf = parsed(&b);
        assert!(matches!(
            btf.member_offset("console.x"),
            Err(BtfError::AmbiguousStruct { .. })
        ));
        assert_eq!(btf.member_offset("console.index").unwrap(), 4);
        assert_eq!(btf.member_offset("console.flags").unwrap(), 0);
        let message = btf.member_offset("console.nope").unwrap_err().to_string();
        assert!(
            message.contains("no member 'nope' in struct console"),
            "{message}"
        );
    }

    #[test]
    fn names_the_missing_member_and_its_struct() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.structure("task_struct", 8, &[("pid", int, 0), ("tgid", int, 32)]);
        let btf = parsed(&b);
        let message = btf
            .member_offset("task_struct.foo")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("kernel BTF has no member 'foo' in struct task_struct"),
            "{message}"
        );
        let message = btf.member_offset("mm_struct.brk").unwrap_err().to_string();
        assert!(message.contains("no struct mm_struct"), "{message}");
    }

    #[test]
    fn refuses_to_follow_pointers() {
        let btf = parsed(&dentry_like());
        let error = btf.member_offset("dentry.d_parent.d_flags").unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, BtfError::NotComposite { .. }), "{message}");
        assert!(message.contains("'d_parent' is a pointer"), "{message}");
    }

    #[test]
    fn rejects_malformed_paths() {
        let btf = parsed(&dentry_like());
        for path in ["", "dentry", "dentry.", ".d_flags", "dentry..d_flags"] {
            assert!(
                matches!(btf.member_offset(path), Err(BtfError::BadPath(_))),
                "{path:?}"
            );
        }
    }

    #[test]
    fn bitfields_have_no_byte_offset() {
        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        b.bitfield_struct(
            "linux_binprm",
            8,
            &[
                ("have_execfd", uint, 0, 1),
                ("secureexec", uint, 1, 1),
                ("argc", uint, 32, 0),
            ],
        );
        let odd_int = b.record("", kind::INT, false, 0, 4, &[3]);
        b.structure("old_style", 4, &[("flag", odd_int, 0)]);
        b.bitfield_struct("misaligned", 4, &[("field", uint, 4, 0)]);
        let btf = parsed(&b);
        for path in [
            "linux_binprm.secureexec",
            "linux_binprm.have_execfd",
            "old_style.flag",
        ] {
            assert!(
                matches!(btf.member_offset(path), Err(BtfError::Bitfield { .. })),
                "{path}"
            );
        }
        assert_eq!(btf.member_offset("linux_binprm.argc").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("misaligned.field"),
            Err(BtfError::NotByteAligned { bit_offset: 4, .. })
        ));
    }

    #[test]
    fn steps_over_every_kind() {
        // One record of each kind, each with the trailing data its kind carries, ahead of the
        // struct looked up: a wrong trailing size would shift the struct's id and its members.
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        let ptr = b.pointer(int);
        let array = b.array(int, int, 3);
        b.union("u", 4, &[("a", int, 0), ("b", int, 0)]);
        let enumerator = b.string("value");
        b.record(
            "e",
            kind::ENUM,
            false,
            2,
            4,
            &[enumerator, 0, enumerator, 1],
        );
        b.forward("f");
        let typedef = b.typedef("t", int);
        let volatile = b.qualifier(kind::VOLATILE, typedef);
        let constant = b.qualifier(kind::CONST, volatile);
        let restrict = b.qualifier(kind::RESTRICT, ptr);
        let proto = b.record("", kind::FUNC_PROTO, false, 2, int, &[0, int, 0, ptr]);
        b.record("func", kind::FUNC, false, 0, proto, &[]);
        let var = b.record("var", kind::VAR, false, 0, int, &[1]);
        b.record(".data", kind::DATASEC, false, 1, 4, &[var, 0, 4]);
        let float = b.record("double", kind::FLOAT, false, 0, 8, &[]);
        b.record("tag", kind::DECL_TAG, false, 0, int, &[u32::MAX]);
        let type_tag = b.record("rcu", kind::TYPE_TAG, false, 0, ptr, &[]);
        let enum64 = b.record("e64", kind::ENUM64, false, 1, 8, &[0, 1, 2]);
        b.structure(
            "every_kind",
            64,
            &[
                ("array", array, 0),
                ("qualified", constant, 96),
                ("restricted", restrict, 128),
                ("real", float, 192),
                ("tagged", type_tag, 256),
                ("wide", enum64, 320),
            ],
        );
        let btf = parsed(&b);
        let layout = |path| btf.member(path).unwrap();
        assert_eq!(
            layout("every_kind.array"),
            MemberLayout {
                offset: 0,
                size: 12,
                kind: ValueKind::Array {
                    element_size: 4,
                    len: 3
                }
            }
        );
        assert_eq!(layout("every_kind.qualified").size, 4);
        assert_eq!(layout("every_kind.qualified").offset, 12);
        assert_eq!(layout("every_kind.restricted").kind, ValueKind::Pointer);
        assert_eq!(layout("every_kind.real").kind, ValueKind::Float);
        assert_eq!(layout("every_kind.tagged").offset, 32);
        assert_eq!(layout("every_kind.wide").kind, ValueKind::Enum);
        assert_eq!(btf.types.len(), 20);
    }

    #[test]
    fn reads_big_endian_blobs() {
        let btf = Btf::parse(&dentry_like().build_big_endian()).unwrap();
        assert_eq!(btf.member_offset("dentry.d_name.name").unwrap(), 16);
    }

    fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = dentry_like().build();
        assert!(matches!(
            Btf::parse(&good[..10]),
            Err(BtfError::TruncatedHeader { len: 10, .. })
        ));
        assert!(matches!(
            Btf::parse(&[]),
            Err(BtfError::TruncatedHeader { .. })
        ));

        let mut bad_magic = good.clone();
        bad_magic[0] = 0x7f;
        assert!(matches!(
            Btf::parse(&bad_magic),
            Err(BtfError::BadMagic { .. })
        ));

        let mut bad_version = good.clone();
        bad_version[2] = 2;
        assert!(matches!(
            Btf::parse(&bad_version),
            Err(BtfError::UnsupportedVersion(2))
        ));

        let mut short_header = good.clone();
        set_u32(&mut short_header, 4, 8);
        assert!(matches!(
            Btf::parse(&short_header),
            Err(BtfError::HeaderTooShort(8))
        ));

        let mut long_header = good.clone();
        set_u32(&mut long_header, 4, good.len() as u32 + 1);
        assert!(matches!(
            Btf::parse(&long_header),
            Err(BtfError::TruncatedHeader { .. })
        ));
    }

    #[test]
    fn sections_past_the_end_are_errors() {
        let good = dentry_like().build();
        let mut long_types = good.clone();
        set_u32(&mut long_types, 12, good.len() as u32);
        assert!(matches!(
            Btf::parse(&long_types),
            Err(BtfError::SectionOutOfBounds {
                section: "type",
                ..
            })
        ));
        let mut far_strings = good.clone();
        set_u32(&mut far_strings, 16, u32::MAX);
        assert!(matches!(
            Btf::parse(&far_strings),
            Err(BtfError::SectionOutOfBounds {
                section: "string",
                ..
            })
        ));
        let mut truncated = good.clone();
        truncated.pop();
        assert!(matches!(
            Btf::parse(&truncated),
            Err(BtfError::SectionOutOfBounds {
                section: "string",
                ..
            })
        ));
    }

    #[test]
    fn truncated_records_and_unknown_kinds_are_errors() {
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        let good = b.build();
        // Shrink the type section by one word: the INT record loses its encoding word.
        let mut short = good.clone();
        set_u32(&mut short, 12, 12);
        assert!(matches!(
            Btf::parse(&short),
            Err(BtfError::TruncatedType {
                id: 1,
                start: 0,
                end: 16,
                len: 12
            })
        ));
        let mut b = BtfBuilder::new();
        b.record("x", 31, false, 0, 0, &[]);
        assert!(matches!(
            Btf::parse(&b.build()),
            Err(BtfError::UnknownKind { id: 1, kind: 31 })
        ));
    }

    #[test]
    fn string_offsets_out_of_range_are_errors() {
        let mut b = BtfBuilder::new();
        b.record("", kind::INT, false, 0, 4, &[32]);
        let int = 1;
        b.structure("s", 4, &[("x", int, 0)]);
        let mut bytes = b.build();
        // The INT's name_off is the first word of the type section.
        set_u32(&mut bytes, BASE_HEADER_LEN, 1000);
        assert!(matches!(
            Btf::parse(&bytes),
            Err(BtfError::StringOutOfRange {
                id: 1,
                offset: 1000,
                ..
            })
        ));
        // The member's name_off: after the INT (16 bytes) and the struct's 12-byte head.
        let mut bytes = b.build();
        set_u32(&mut bytes, BASE_HEADER_LEN + 28, 1000);
        assert!(matches!(
            Btf::parse(&bytes),
            Err(BtfError::StringOutOfRange {
                id: 2,
                offset: 1000,
                ..
            })
        ));
    }

    #[test]
    fn malformed_string_sections_are_errors() {
        let good = dentry_like().build();
        let mut unterminated = good.clone();
        *unterminated.last_mut().unwrap() = b'x';
        assert!(matches!(
            Btf::parse(&unterminated),
            Err(BtfError::BadStringSection(_))
        ));
        let mut empty = good.clone();
        set_u32(&mut empty, 20, 0);
        assert!(matches!(
            Btf::parse(&empty),
            Err(BtfError::BadStringSection(_))
        ));
    }

    #[test]
    fn dangling_and_looping_type_references_are_errors() {
        let mut b = BtfBuilder::new();
        b.structure("dangling", 4, &[("x", 99, 0)]);
        // A typedef naming itself, and a struct whose anonymous member is itself.
        let own_id = 2;
        b.typedef("loop", own_id);
        b.structure("holder", 4, &[("x", own_id, 0)]);
        let recursive_id = 4;
        b.structure("recursive", 4, &[("", recursive_id, 0)]);
        let btf = parsed(&b);
        assert!(matches!(
            btf.member_offset("dangling.x"),
            Err(BtfError::TypeOutOfRange { id: 99, .. })
        ));
        assert!(matches!(
            btf.member_offset("holder.x"),
            Err(BtfError::TooComplex { .. })
        ));
        assert!(matches!(
            btf.member_offset("recursive.x"),
            Err(BtfError::TooComplex { .. })
        ));
    }

    #[test]
    fn no_prefix_or_corruption_panics() {
        let good = dentry_like().build();
        let lookups = ["dentry.d_name.name", "qstr.hash_len", "dentry.d_parent"];
        let exercise = |bytes: &[u8]| {
            if let Ok(btf) = Btf::parse(bytes) {
                for path in lookups {
                    let _ = btf.member(path);
                }
            }
        };
        for len in 0..good.len() {
            exercise(&good[..len]);
        }
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupt = good.clone();
                corrupt[at] ^= flip;
                exercise(&corrupt);
            }
        }
    }

    #[test]
    fn parses_the_running_kernel() {
        let Some(btf) = kernel_btf() else { return };
        assert!(btf.types.len() > 1000, "{btf:?}");
        assert_eq!(btf.pointer_size as usize, std::mem::size_of::<usize>());
        // Both hold on every x86_64 build: thread_info must open task_struct
        // (CONFIG_THREAD_INFO_IN_TASK), and path is two pointers.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(btf.member_offset("task_struct.thread_info").unwrap(), 0);
        assert_eq!(btf.member_size("path.dentry").unwrap(), btf.pointer_size);
        let message = btf
            .member_offset("task_struct.foo")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("kernel BTF has no member 'foo' in struct task_struct"),
            "{message}"
        );
    }

    #[test]
    fn type_table_matches_bpftool() {
        let (Some(btf), Some(dump)) = (kernel_btf(), bpftool_dump()) else {
            return;
        };
        assert_eq!(btf.types.len(), dump.len(), "type count");
        for (id, (ty, dumped)) in btf.types.iter().zip(dump).enumerate() {
            let name = String::from_utf8_lossy(name_at(&btf.strings, ty.name_off));
            assert_eq!(name, dumped.name, "name of type {id}");
            assert_eq!(
                kind_name(&ty.kind),
                dumped.kind,
                "kind of type {id} ({name})"
            );
            check_kind_details(btf, id, ty, dumped);
        }
    }

    fn kind_name(kind: &Kind) -> &'static str {
        match kind {
            Kind::Void => "VOID",
            Kind::Int { .. } => "INT",
            Kind::Pointer { .. } => "PTR",
            Kind::Array { .. } => "ARRAY",
            Kind::Struct(_) => "STRUCT",
            Kind::Union(_) => "UNION",
            Kind::Enum { .. } => "ENUM",
            Kind::Enum64 { .. } => "ENUM64",
            Kind::Forward => "FWD",
            Kind::Typedef(_) => "TYPEDEF",
            Kind::Volatile(_) => "VOLATILE",
            Kind::Const(_) => "CONST",
            Kind::Restrict(_) => "RESTRICT",
            Kind::TypeTag(_) => "TYPE_TAG",
            Kind::Function => "FUNC",
            Kind::FunctionProto(_) => "FUNC_PROTO",
            Kind::Variable => "VAR",
            Kind::DataSection => "DATASEC",
            Kind::DeclTag => "DECL_TAG",
            Kind::Float { .. } => "FLOAT",
        }
    }

    fn check_kind_details(btf: &Btf, id: usize, ty: &Type, dumped: &DumpedType) {
        match ty.kind {
            Kind::Int {
                size,
                bits,
                bit_offset,
            } => {
                assert_eq!(Some(size), dumped.field("size"), "type {id}");
                assert_eq!(Some(bits), dumped.field("nr_bits"), "type {id}");
                assert_eq!(Some(bit_offset), dumped.field("bits_offset"), "type {id}");
            }
            Kind::Pointer { target: t }
            | Kind::Typedef(t)
            | Kind::Volatile(t)
            | Kind::Const(t)
            | Kind::Restrict(t)
            | Kind::TypeTag(t) => assert_eq!(Some(t), dumped.field("type_id"), "type {id}"),
            Kind::Array { element, len } => {
                assert_eq!(Some(element), dumped.field("type_id"), "type {id}");
                assert_eq!(Some(len), dumped.field("nr_elems"), "type {id}");
            }
            Kind::Struct(composite) | Kind::Union(composite) => {
                assert_eq!(Some(composite.size), dumped.field("size"), "type {id}");
                let members: Vec<DumpedMember> = btf.members
                    [composite.first_member..composite.first_member + composite.member_count]
                    .iter()
                    .map(|m| DumpedMember {
                        name: String::from_utf8_lossy(name_at(&btf.strings, m.name_off))
                            .into_owned(),
                        type_id: m.type_id,
                        bits_offset: m.bit_offset,
                        bitfield_size: m.bitfield_bits,
                    })
                    .collect();
                assert_eq!(members, dumped.members, "members of type {id}");
            }
            Kind::Enum { size } | Kind::Enum64 { size } | Kind::Float { size } => {
                assert_eq!(Some(size), dumped.field("size"), "type {id}");
            }
            _ => {}
        }
    }

    #[test]
    fn kernel_bitfields_are_refused() {
        let (Some(btf), Some(dump)) = (kernel_btf(), bpftool_dump()) else {
            return;
        };
        let task = dump
            .iter()
            .find(|ty| ty.kind == "STRUCT" && ty.name == "task_struct")
            .expect("task_struct in bpftool's dump");
        let Some(bitfield) = task.members.iter().find(|m| m.bitfield_size != 0) else {
            eprintln!("skipping: this kernel's task_struct has no bitfields");
            return;
        };
        let path = format!("task_struct.{}", bitfield.name);
        assert!(
            matches!(btf.member_offset(&path), Err(BtfError::Bitfield { .. })),
            "{path}"
        );
    }
}
