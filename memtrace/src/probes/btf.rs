//! The questions memtrace puts to the kernel's BTF (BPF Type Format): where a struct member lies
//! and what it holds, so that the eBPF programs read kernel structs at the offsets of the kernel
//! they run on rather than of the kernel they were built against; and what a raw tracepoint
//! passes (tracepoints.rs). Parsing is the `btf-rs` crate's; this module only walks its types.

use std::collections::{hash_map::Entry, HashMap};
use std::sync::{Mutex, PoisonError};

use btf_rs::{Backend, Member, Struct, Type};

/// Where the running kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF).
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// How many typedef/qualifier/array/anonymous-member hops one lookup follows before concluding
/// that the type graph loops. Real kernels need a handful; only malformed BTF comes near this.
const MAX_TYPE_DEPTH: usize = 64;
/// How many structs and unions one member search may open. Without a cap, malformed BTF whose
/// anonymous members fan out without looping (each struct holding two of the next) would take
/// exponential time; the kernel's largest structs need a few dozen.
const MAX_SEARCHED_COMPOSITES: usize = 100_000;
/// BTF records no pointer size; like libbpf, take it from `long`, which is pointer-wide on every
/// ABI Linux supports. These are the spellings compilers emit for it.
const LONG_TYPE_NAMES: [&str; 4] = ["long int", "long unsigned int", "long", "unsigned long"];

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF from {path} (is the kernel built with CONFIG_DEBUG_INFO_BTF?): {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(#[from] btf_rs::Error),
    #[error("cannot resolve '{path}': {source}")]
    Resolve { path: String, source: btf_rs::Error },
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
    #[error("cannot resolve '{path}': the types it goes through nest too deeply or too widely (a loop in malformed BTF?)")]
    TooComplex { path: String },
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

/// The kernel's types, parsed by btf-rs.
pub struct Btf {
    types: btf_rs::Btf,
    pointer_size: u32,
    /// The ids of each name looked up so far. btf-rs's mapped backend scans every type for each
    /// name, and the offsets ask for the same fifteen structs forty-odd times.
    ids_by_name: Mutex<HashMap<String, Vec<u32>>>,
}

/// A member found by name, with its offset from the container that was searched (which may
/// differ from its own container when it sits in an anonymous struct or union).
struct FoundMember {
    member: Member,
    bit_offset: u64,
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
    /// The running kernel's BTF, from [`VMLINUX_BTF_PATH`]. Mapped where the kernel allows it
    /// (since Linux 6.16): btf-rs then keeps only an index (about 1 MiB), at the cost of a scan
    /// of all types per name looked up. Older kernels refuse the mapping; it is read into
    /// btf-rs's cache then (about 34 MiB for a Debian kernel, freed once loading has its
    /// answers).
    pub fn vmlinux() -> Result<Btf, BtfError> {
        let read_error = |source| BtfError::Read {
            path: VMLINUX_BTF_PATH,
            source,
        };
        let types = btf_rs::Btf::from_file_with_backend(VMLINUX_BTF_PATH, Backend::Mmap)
            .or_else(|_| btf_rs::Btf::from_file(VMLINUX_BTF_PATH))
            .map_err(|error| match error {
                btf_rs::Error::IO(source) => read_error(source),
                other => BtfError::Malformed(other),
            })?;
        Ok(Self::with_types(types))
    }

    /// Parses a standalone BTF blob.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        Ok(Self::with_types(btf_rs::Btf::from_bytes(bytes)?))
    }

    fn with_types(types: btf_rs::Btf) -> Btf {
        let long_size = LONG_TYPE_NAMES.iter().find_map(|name| {
            let types = types.resolve_types_by_name(name).ok()?;
            types.into_iter().find_map(|ty| match ty {
                Type::Int(int) => u32::try_from(int.size()).ok(),
                _ => None,
            })
        });
        Btf {
            types,
            // A BTF without `long` is not a kernel's; for it, this host's width is the best guess.
            pointer_size: long_size.unwrap_or(std::mem::size_of::<usize>() as u32),
            ids_by_name: Mutex::default(),
        }
    }

    /// Byte offset of the last member of `path` (e.g. `"dentry.d_name.name"`) from the start of
    /// the struct named first.
    #[cfg(test)]
    pub fn member_offset(&self, path: &str) -> Result<u32, BtfError> {
        Ok(self.member(path)?.offset)
    }

    /// Offset, size and kind of the last member of `path`, looking through anonymous structs and
    /// unions, typedefs and qualifiers on the way.
    pub fn member(&self, path: &str) -> Result<MemberLayout, BtfError> {
        let (struct_name, member_names) = split_path(path)?;
        // Unrelated structs may share a name (a driver's private `struct console`, say). The
        // answer stands only if every candidate that has the member agrees where it is. Only
        // STRUCT records count: a FWD declaration of the same name has no members to find.
        let mut answer: Option<MemberLayout> = None;
        let mut first_error = None;
        for ty in self.types_named(struct_name, path)? {
            let Type::Struct(candidate) = ty else {
                continue;
            };
            match self.resolve_in_struct(candidate, &member_names, path) {
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
        mut container: Struct,
        member_names: &[&str],
        path: &str,
    ) -> Result<MemberLayout, BtfError> {
        let mut bit_offset = 0u64;
        let mut keyword = "struct";
        let mut names = member_names.iter().peekable();
        while let Some(&name) = names.next() {
            let found = self.find_member(&container, keyword, name, path)?;
            bit_offset += found.bit_offset;
            let target = self.target_of(&found.member, path)?;
            match names.peek() {
                Some(&&next) => match target {
                    Type::Struct(inner) => (container, keyword) = (inner, "struct"),
                    Type::Union(inner) => (container, keyword) = (inner, "union"),
                    other => {
                        return Err(BtfError::NotComposite {
                            path: path.to_owned(),
                            member: name.to_owned(),
                            found: self.describe(&other),
                            next: next.to_owned(),
                        })
                    }
                },
                None => return self.layout(&found, &target, bit_offset, name, path),
            }
        }
        Err(BtfError::BadPath(path.to_owned()))
    }

    /// `keyword` names the container in errors: `struct` or `union`.
    fn find_member(
        &self,
        container: &Struct,
        keyword: &str,
        name: &str,
        path: &str,
    ) -> Result<FoundMember, BtfError> {
        let mut budget = MAX_SEARCHED_COMPOSITES;
        self.search_members(container, name, path, 0, &mut budget)?
            .ok_or_else(|| {
                let container_name = self.name_of(container).unwrap_or_default();
                BtfError::NoSuchMember {
                    member: name.to_owned(),
                    container: if container_name.is_empty() {
                        format!("anonymous {keyword}")
                    } else {
                        format!("{keyword} {container_name}")
                    },
                    path: path.to_owned(),
                }
            })
    }

    /// Looks for `name` among the members of `container`, and among those of its anonymous
    /// struct and union members, which C lets one name as the container's own.
    fn search_members(
        &self,
        container: &Struct,
        name: &str,
        path: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Option<FoundMember>, BtfError> {
        *budget = budget.saturating_sub(1);
        if depth > MAX_TYPE_DEPTH || *budget == 0 {
            return Err(self.too_complex(path));
        }
        for member in &container.members {
            let member_name = self.types.resolve_name(member).map_err(resolve(path))?;
            if member_name == name {
                return Ok(Some(FoundMember {
                    member: member.clone(),
                    bit_offset: u64::from(member.bit_offset()),
                }));
            }
            if !member_name.is_empty() {
                continue;
            }
            // Unnamed members that are not structs or unions are padding (`long: 64;`).
            let (Type::Struct(inner) | Type::Union(inner)) = self.target_of(member, path)? else {
                continue;
            };
            if let Some(mut found) = self.search_members(&inner, name, path, depth + 1, budget)? {
                found.bit_offset += u64::from(member.bit_offset());
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn layout(
        &self,
        found: &FoundMember,
        target: &Type,
        bit_offset: u64,
        member: &str,
        path: &str,
    ) -> Result<MemberLayout, BtfError> {
        // A struct whose record sets kind_flag gives each bitfield its width. Without kind_flag
        // a bitfield is told only by an INT narrower than its storage, which btf-rs does not
        // expose; pahole has set kind_flag on every struct with bitfields since 1.13, and
        // kernels with BTF need at least 1.16.
        if found.member.bitfield_size().is_some_and(|bits| bits != 0) {
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
        let offset = u32::try_from(bit_offset / 8).map_err(|_| self.overflow(path))?;
        let (size, kind) = self.value_layout(target, path, 0)?;
        Ok(MemberLayout { offset, size, kind })
    }

    /// Size and kind of a type, looking through typedefs and qualifiers.
    fn value_layout(
        &self,
        ty: &Type,
        path: &str,
        depth: usize,
    ) -> Result<(u32, ValueKind), BtfError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(self.too_complex(path));
        }
        let size = |bytes: usize| u32::try_from(bytes).map_err(|_| self.overflow(path));
        Ok(match ty {
            Type::Int(int) => (size(int.size())?, ValueKind::Integer),
            Type::Enum(e) => (size(e.size())?, ValueKind::Enum),
            Type::Enum64(e) => (size(e.size())?, ValueKind::Enum),
            Type::Float(float) => (size(float.size())?, ValueKind::Float),
            Type::Ptr(_) => (self.pointer_size, ValueKind::Pointer),
            Type::Struct(s) => (size(s.size())?, ValueKind::Struct),
            Type::Union(u) => (size(u.size())?, ValueKind::Union),
            Type::Array(array) => {
                let element = self.chained(array, path)?;
                let (element_size, _) = self.value_layout(&element, path, depth + 1)?;
                let len = size(array.len())?;
                let total = element_size
                    .checked_mul(len)
                    .ok_or_else(|| self.overflow(path))?;
                (total, ValueKind::Array { element_size, len })
            }
            Type::Typedef(_)
            | Type::Volatile(_)
            | Type::Const(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                let next = self.chained_of(ty, path)?;
                self.value_layout(&next, path, depth + 1)?
            }
            other => {
                return Err(BtfError::Unsized {
                    path: path.to_owned(),
                    what: self.describe(other),
                })
            }
        })
    }

    /// The type a member holds, with typedefs and qualifiers looked through.
    fn target_of(&self, member: &Member, path: &str) -> Result<Type, BtfError> {
        let ty = self.chained(member, path)?;
        self.strip_qualifiers(ty, path)
    }

    /// Follows typedefs and const/volatile/restrict/type-tag qualifiers to the type they name.
    fn strip_qualifiers(&self, mut ty: Type, path: &str) -> Result<Type, BtfError> {
        for _ in 0..MAX_TYPE_DEPTH {
            match ty {
                Type::Typedef(_)
                | Type::Volatile(_)
                | Type::Const(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => ty = self.chained_of(&ty, path)?,
                _ => return Ok(ty),
            }
        }
        Err(self.too_complex(path))
    }

    /// The type `ty` refers to (a pointer's target, a typedef's type...).
    fn chained_of(&self, ty: &Type, path: &str) -> Result<Type, BtfError> {
        let referrer = ty.as_btf_type().ok_or_else(|| BtfError::Resolve {
            path: path.to_owned(),
            source: btf_rs::Error::OpNotSupp(format!("{} refers to no type", ty.name())),
        })?;
        self.chained(referrer, path)
    }

    fn chained<T: btf_rs::BtfType + ?Sized>(&self, ty: &T, path: &str) -> Result<Type, BtfError> {
        self.types.resolve_chained_type(ty).map_err(resolve(path))
    }

    fn types_named(&self, name: &str, path: &str) -> Result<Vec<Type>, BtfError> {
        let mut ids_by_name = self
            .ids_by_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ids = match ids_by_name.entry(name.to_owned()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => new.insert(
                self.types
                    .resolve_ids_by_name(name)
                    .map_err(resolve(path))?,
            ),
        };
        ids.iter()
            .map(|&id| self.types.resolve_type_by_id(id).map_err(resolve(path)))
            .collect()
    }

    fn name_of(&self, ty: &dyn btf_rs::BtfType) -> Option<String> {
        self.types.resolve_name(ty).ok()
    }

    /// A type as error messages name it: `struct task_struct`, `anonymous union`, `a pointer`.
    fn describe(&self, ty: &Type) -> String {
        let name = ty
            .as_btf_type()
            .and_then(|named| self.name_of(named))
            .unwrap_or_default();
        let named = |keyword: &str| match name.as_str() {
            "" => format!("anonymous {keyword}"),
            name => format!("{keyword} {name}"),
        };
        match ty {
            Type::Void => "void".to_owned(),
            Type::Int(int) => format!("an integer of {} bytes ({name})", int.size()),
            Type::Ptr(_) => "a pointer".to_owned(),
            Type::Array(array) => format!("an array of {} elements", array.len()),
            Type::Struct(_) => named("struct"),
            Type::Union(_) => named("union"),
            Type::Enum(_) | Type::Enum64(_) => named("enum"),
            Type::Fwd(_) => format!("a forward declaration of {name}"),
            Type::Typedef(_) => format!("typedef {name}"),
            Type::Func(_) | Type::FuncProto(_) => "a function".to_owned(),
            Type::Float(float) => format!("a float of {} bytes", float.size()),
            other => other.name().to_owned(),
        }
    }

    fn too_complex(&self, path: &str) -> BtfError {
        BtfError::TooComplex {
            path: path.to_owned(),
        }
    }

    fn overflow(&self, path: &str) -> BtfError {
        BtfError::Overflow {
            path: path.to_owned(),
        }
    }
}

fn resolve(path: &str) -> impl Fn(btf_rs::Error) -> BtfError + '_ {
    move |source| BtfError::Resolve {
        path: path.to_owned(),
        source,
    }
}

/// Tracepoint prototypes (`btf_trace_<name>`), for kernel mode.
pub mod tracepoints;

/// Test helpers shared with `offsets.rs`, `kernel_mode.rs` and `kernel_differences.rs`.
#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
