//! The member lookups over synthetic BTF (the shapes the kernel's structs take), and over the
//! running kernel's, cross-checked with bpftool.

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
    assert_eq!(btf.member("dentry.d_name").unwrap().size, 16);
}

#[test]
fn struct_lookup_ignores_forward_declarations() {
    // dentry_like declares `struct dentry` as FWD before defining it.
    let btf = parsed(&dentry_like());
    assert_eq!(btf.member_offset("dentry.d_parent").unwrap(), 32);
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
    b.bitfield_struct("misaligned", 4, &[("field", uint, 4, 0)]);
    let btf = parsed(&b);
    for path in ["linux_binprm.secureexec", "linux_binprm.have_execfd"] {
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
        Err(BtfError::Resolve {
            source: btf_rs::Error::InvalidType(99),
            ..
        })
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
    assert!(btf.types.base().type_id_range().1 > 1000);
    assert_eq!(btf.pointer_size as usize, std::mem::size_of::<usize>());
    // Both hold on every x86_64 build: thread_info must open task_struct
    // (CONFIG_THREAD_INFO_IN_TASK), and path is two pointers.
    #[cfg(target_arch = "x86_64")]
    assert_eq!(btf.member_offset("task_struct.thread_info").unwrap(), 0);
    assert_eq!(btf.member("path.dentry").unwrap().size, btf.pointer_size);
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

/// btf-rs's reading of every struct and union of the running kernel (name, size, members with
/// their names, types, bit offsets and bitfield widths) is bpftool's (libbpf's).
#[test]
fn kernel_structs_match_bpftool() {
    let (Some(btf), Some(dump)) = (kernel_btf(), bpftool_dump()) else {
        return;
    };
    assert_eq!(btf.types.base().type_id_range(), (0, dump.len() as u32 - 1));
    let mut composites = 0;
    for (id, dumped) in dump.iter().enumerate() {
        let ty = btf.types.resolve_type_by_id(id as u32).unwrap();
        let (Type::Struct(s) | Type::Union(s)) = &ty else {
            assert_eq!(
                ty.name().to_uppercase().replace('-', "_"),
                dumped.kind,
                "type {id}"
            );
            continue;
        };
        composites += 1;
        assert_eq!(btf.name_of(s).unwrap(), dumped.name, "name of type {id}");
        assert_eq!(Some(s.size() as u32), dumped.field("size"), "type {id}");
        let members: Vec<DumpedMember> = s
            .members
            .iter()
            .map(|m| DumpedMember {
                name: btf.name_of(m).unwrap(),
                type_id: btf_rs::BtfType::get_type_id(m).unwrap(),
                bits_offset: m.bit_offset(),
                bitfield_size: m.bitfield_size().unwrap_or(0),
            })
            .collect();
        assert_eq!(
            members, dumped.members,
            "members of type {id} ({})",
            dumped.name
        );
    }
    assert!(composites > 1000, "{composites} structs and unions");
}

/// Every kernel function the fentry backend attaches to is a function of the running kernel
/// (a rename would otherwise only show as auto falling back to raw tracepoints).
#[test]
fn running_kernel_has_every_fentry_function() {
    let Some(btf) = kernel_btf() else { return };
    for (function, _, _) in crate::probes::backend::FENTRY_FUNCTIONS {
        let types = btf.types.resolve_types_by_name(function).unwrap();
        assert!(
            types.iter().any(|ty| matches!(ty, Type::Func(_))),
            "{function}: {types:?}"
        );
    }
}

#[test]
fn arrays_have_their_element_size_and_length() {
    let mut b = BtfBuilder::new();
    let long = b.int("long unsigned int", 8);
    let auxv = b.array(long, long, 46);
    b.structure(
        "mm_struct",
        376,
        &[("brk", long, 0), ("saved_auxv", auxv, 64)],
    );
    let layout = parsed(&b).member("mm_struct.saved_auxv").unwrap();
    let kind = ValueKind::Array {
        element_size: 8,
        len: 46,
    };
    assert_eq!(
        layout,
        MemberLayout {
            offset: 8,
            size: 368,
            kind
        }
    );
}
