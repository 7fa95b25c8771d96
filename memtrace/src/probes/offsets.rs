//! Fills [`KernelOffsets`] from the running kernel's BTF, checking along the way that each field
//! still has the shape the eBPF programs read it as.

use memtrace_common::KernelOffsets;

use super::btf::{Btf, BtfError, MemberLayout, ValueKind};

/// x86's `TS_COMPAT` bit in `thread_info.status` (arch/x86/include/asm/thread_info.h: "32bit
/// syscall active"). It is a preprocessor constant, and BTF describes only types, so it cannot
/// be looked up like the offsets; its value has not changed since x86_64 gained ia32 emulation.
pub const TS_COMPAT: u32 = 0x0002;

/// Kernel pointers as the eBPF programs read them.
const POINTER_SIZE: u32 = 8;
/// `linux_binprm.buf` holds the start of the new image; the programs classify it from its ELF
/// header, which is this long for 64-bit images (and shorter for 32-bit ones).
const ELF64_HEADER_LEN: u32 = 64;

/// `struct upid { int nr; struct pid_namespace *ns; }`: the element of `pid.numbers`, which
/// `Use::WordArray` checks the kernel's array is made of.
const UPID_SIZE: u32 = 16;

/// What the programs do with a field, and so what the kernel's field has to be.
#[derive(Debug, Clone, Copy)]
enum Use {
    /// Read as a pointer and followed.
    Pointer,
    /// Read as an integer of this many bytes.
    Integer(u32),
    /// A struct embedded in its container, whose own members are read at an added offset.
    Embedded,
    /// An array read element by element, each element this many bytes (auxv words).
    WordArray(u32),
    /// A byte buffer read in full up to this length.
    Bytes { at_least: u32 },
}

impl Use {
    fn accepts(self, layout: &MemberLayout) -> bool {
        match self {
            Use::Pointer => layout.kind == ValueKind::Pointer && layout.size == POINTER_SIZE,
            Use::Integer(size) => {
                matches!(layout.kind, ValueKind::Integer | ValueKind::Enum) && layout.size == size
            }
            Use::Embedded => layout.kind == ValueKind::Struct,
            Use::WordArray(element) => {
                matches!(layout.kind, ValueKind::Array { element_size, .. } if element_size == element)
            }
            Use::Bytes { at_least } => {
                matches!(
                    layout.kind,
                    ValueKind::Array {
                        element_size: 1,
                        ..
                    }
                ) && layout.size >= at_least
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Use::Pointer => format!("a pointer of {POINTER_SIZE} bytes"),
            Use::Integer(size) => format!("an integer of {size} bytes"),
            Use::Embedded => "an embedded struct".to_owned(),
            Use::WordArray(element) => format!("an array of {element}-byte elements"),
            Use::Bytes { at_least } => format!("a byte array of at least {at_least} bytes"),
        }
    }
}

fn describe_layout(layout: &MemberLayout) -> String {
    let size = layout.size;
    match layout.kind {
        ValueKind::Integer => format!("an integer of {size} bytes"),
        ValueKind::Enum => format!("an enum of {size} bytes"),
        ValueKind::Float => format!("a float of {size} bytes"),
        ValueKind::Pointer => format!("a pointer of {size} bytes"),
        ValueKind::Struct => format!("a struct of {size} bytes"),
        ValueKind::Union => format!("a union of {size} bytes"),
        ValueKind::Array { element_size, len } => {
            format!("an array of {len} elements of {element_size} bytes")
        }
    }
}

/// The offset of `path`, provided the kernel's field can be used as `usage` says.
fn offset_for(btf: &Btf, path: &str, usage: Use) -> Result<u32, BtfError> {
    let layout = btf.member(path)?;
    if usage.accepts(&layout) {
        Ok(layout.offset)
    } else {
        Err(BtfError::UnexpectedLayout {
            path: path.to_owned(),
            found: describe_layout(&layout),
            expected: usage.describe(),
        })
    }
}

/// Resolves every offset the eBPF programs need, failing on the first field that is missing or
/// no longer shaped as the programs read it.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let at = |path: &str, usage: Use| offset_for(btf, path, usage);
    // `unsigned long` members of mm_struct, vm_area_struct and auxv.
    let long = Use::Integer(8);
    Ok(KernelOffsets {
        task_thread_info: at("task_struct.thread_info", Use::Embedded)?,
        thread_info_status: at("thread_info.status", Use::Integer(4))?,
        task_pid: at("task_struct.pid", Use::Integer(4))?,
        task_tgid: at("task_struct.tgid", Use::Integer(4))?,
        task_mm: at("task_struct.mm", Use::Pointer)?,
        task_exit_code: at("task_struct.exit_code", Use::Integer(4))?,
        task_personality: at("task_struct.personality", Use::Integer(4))?,
        task_files: at("task_struct.files", Use::Pointer)?,
        files_fdt: at("files_struct.fdt", Use::Pointer)?,
        fdtable_max_fds: at("fdtable.max_fds", Use::Integer(4))?,
        fdtable_fd: at("fdtable.fd", Use::Pointer)?,
        file_f_path: at("file.f_path", Use::Embedded)?,
        file_f_inode: at("file.f_inode", Use::Pointer)?,
        inode_i_ino: at("inode.i_ino", long)?,
        path_dentry: at("path.dentry", Use::Pointer)?,
        path_mnt: at("path.mnt", Use::Pointer)?,
        dentry_d_parent: at("dentry.d_parent", Use::Pointer)?,
        dentry_d_name_name: at("dentry.d_name.name", Use::Pointer)?,
        mount_mnt: at("mount.mnt", Use::Embedded)?,
        mount_mnt_parent: at("mount.mnt_parent", Use::Pointer)?,
        mount_mnt_mountpoint: at("mount.mnt_mountpoint", Use::Pointer)?,
        vfsmount_mnt_root: at("vfsmount.mnt_root", Use::Pointer)?,
        task_fs: at("task_struct.fs", Use::Pointer)?,
        fs_struct_root: at("fs_struct.root", Use::Embedded)?,
        mm_start_code: at("mm_struct.start_code", long)?,
        mm_end_code: at("mm_struct.end_code", long)?,
        mm_start_data: at("mm_struct.start_data", long)?,
        mm_end_data: at("mm_struct.end_data", long)?,
        mm_start_brk: at("mm_struct.start_brk", long)?,
        mm_brk: at("mm_struct.brk", long)?,
        mm_start_stack: at("mm_struct.start_stack", long)?,
        mm_mmap_base: at("mm_struct.mmap_base", long)?,
        mm_saved_auxv: at("mm_struct.saved_auxv", Use::WordArray(8))?,
        binprm_vma: at("linux_binprm.vma", Use::Pointer)?,
        binprm_file: at("linux_binprm.file", Use::Pointer)?,
        binprm_filename: at("linux_binprm.filename", Use::Pointer)?,
        binprm_interp: at("linux_binprm.interp", Use::Pointer)?,
        binprm_buf: at(
            "linux_binprm.buf",
            Use::Bytes {
                at_least: ELF64_HEADER_LEN,
            },
        )?,
        vma_vm_start: at("vm_area_struct.vm_start", long)?,
        vma_vm_end: at("vm_area_struct.vm_end", long)?,
        ts_compat: TS_COMPAT,
        task_signal: at("task_struct.signal", Use::Pointer)?,
        signal_live: at("signal_struct.live.counter", Use::Integer(4))?,
        task_cgroups: at("task_struct.cgroups", Use::Pointer)?,
        css_set_dfl_cgrp: at("css_set.dfl_cgrp", Use::Pointer)?,
        cgroup_kn: at("cgroup.kn", Use::Pointer)?,
        kernfs_node_id: at("kernfs_node.id", Use::Integer(8))?,
        task_thread_pid: at("task_struct.thread_pid", Use::Pointer)?,
        signal_pids: at("signal_struct.pids", Use::WordArray(POINTER_SIZE))?,
        pid_level: at("pid.level", Use::Integer(4))?,
        pid_numbers: at("pid.numbers", Use::WordArray(UPID_SIZE))?,
        upid_size: UPID_SIZE,
        upid_nr: at("upid.nr", Use::Integer(4))?,
        task_comm: at(
            "task_struct.comm",
            Use::Bytes {
                at_least: memtrace_common::COMM_LEN as u32,
            },
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::btf::test_support::{
        bpftool_dump, dumped_member_offset, kernel_btf, BtfBuilder,
    };
    use super::*;

    /// Every field with the kernel path it must come from, restated independently of
    /// `kernel_offsets` so that a field wired to the wrong path is caught.
    fn fields_and_paths(o: &KernelOffsets) -> Vec<(u32, &'static str)> {
        vec![
            (o.task_thread_info, "task_struct.thread_info"),
            (o.thread_info_status, "thread_info.status"),
            (o.task_pid, "task_struct.pid"),
            (o.task_tgid, "task_struct.tgid"),
            (o.task_mm, "task_struct.mm"),
            (o.task_exit_code, "task_struct.exit_code"),
            (o.task_personality, "task_struct.personality"),
            (o.task_files, "task_struct.files"),
            (o.files_fdt, "files_struct.fdt"),
            (o.fdtable_max_fds, "fdtable.max_fds"),
            (o.fdtable_fd, "fdtable.fd"),
            (o.file_f_path, "file.f_path"),
            (o.file_f_inode, "file.f_inode"),
            (o.inode_i_ino, "inode.i_ino"),
            (o.path_dentry, "path.dentry"),
            (o.path_mnt, "path.mnt"),
            (o.dentry_d_parent, "dentry.d_parent"),
            (o.dentry_d_name_name, "dentry.d_name.name"),
            (o.mount_mnt, "mount.mnt"),
            (o.mount_mnt_parent, "mount.mnt_parent"),
            (o.mount_mnt_mountpoint, "mount.mnt_mountpoint"),
            (o.vfsmount_mnt_root, "vfsmount.mnt_root"),
            (o.task_fs, "task_struct.fs"),
            (o.fs_struct_root, "fs_struct.root"),
            (o.mm_start_code, "mm_struct.start_code"),
            (o.mm_end_code, "mm_struct.end_code"),
            (o.mm_start_data, "mm_struct.start_data"),
            (o.mm_end_data, "mm_struct.end_data"),
            (o.mm_start_brk, "mm_struct.start_brk"),
            (o.mm_brk, "mm_struct.brk"),
            (o.mm_start_stack, "mm_struct.start_stack"),
            (o.mm_mmap_base, "mm_struct.mmap_base"),
            (o.mm_saved_auxv, "mm_struct.saved_auxv"),
            (o.binprm_vma, "linux_binprm.vma"),
            (o.binprm_file, "linux_binprm.file"),
            (o.binprm_filename, "linux_binprm.filename"),
            (o.binprm_interp, "linux_binprm.interp"),
            (o.binprm_buf, "linux_binprm.buf"),
            (o.vma_vm_start, "vm_area_struct.vm_start"),
            (o.vma_vm_end, "vm_area_struct.vm_end"),
            (o.task_signal, "task_struct.signal"),
            (o.task_cgroups, "task_struct.cgroups"),
            (o.css_set_dfl_cgrp, "css_set.dfl_cgrp"),
            (o.cgroup_kn, "cgroup.kn"),
            (o.kernfs_node_id, "kernfs_node.id"),
            (o.task_thread_pid, "task_struct.thread_pid"),
            (o.signal_pids, "signal_struct.pids"),
            (o.pid_level, "pid.level"),
            (o.pid_numbers, "pid.numbers"),
            (o.upid_nr, "upid.nr"),
            (o.task_comm, "task_struct.comm"),
            (o.signal_live, "signal_struct.live.counter"),
        ]
    }

    #[test]
    fn running_kernel_offsets_match_bpftool() {
        let Some(btf) = kernel_btf() else { return };
        let offsets = kernel_offsets(btf).expect("the running kernel has every field");
        assert_eq!(offsets.ts_compat, 0x2);
        let Some(dump) = bpftool_dump() else { return };
        for (offset, path) in fields_and_paths(&offsets) {
            assert_eq!(Some(offset), dumped_member_offset(dump, path), "{path}");
        }
    }

    #[test]
    fn running_kernel_offsets_are_distinct_within_each_struct() {
        let Some(btf) = kernel_btf() else { return };
        let offsets = kernel_offsets(btf).unwrap();
        let fields = fields_and_paths(&offsets);
        for (i, (offset, path)) in fields.iter().enumerate() {
            let outer = path.split('.').next();
            for (other_offset, other_path) in &fields[i + 1..] {
                if other_path.split('.').next() == outer {
                    assert_ne!(offset, other_offset, "{path} and {other_path}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn thread_info_opens_task_struct_on_x86_64() {
        // `current_thread_info()` is `(struct thread_info *)current`: x86_64 requires this.
        let Some(btf) = kernel_btf() else { return };
        assert_eq!(kernel_offsets(btf).unwrap().task_thread_info, 0);
    }

    #[test]
    fn a_field_of_the_wrong_size_is_refused() {
        let mut b = BtfBuilder::new();
        let u64_t = b.int("long long unsigned int", 8);
        let thread_info = b.structure("thread_info", 8, &[("status", u64_t, 0)]);
        b.structure("task_struct", 8, &[("thread_info", thread_info, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let error = kernel_offsets(&btf).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, BtfError::UnexpectedLayout { .. }),
            "{message}"
        );
        assert_eq!(
            message,
            "kernel field 'thread_info.status' is an integer of 8 bytes, \
             but the eBPF programs read it as an integer of 4 bytes"
        );
    }

    #[test]
    fn a_missing_member_is_named() {
        let mut b = BtfBuilder::new();
        let u32_t = b.int("unsigned int", 4);
        let thread_info = b.structure("thread_info", 4, &[("status", u32_t, 0)]);
        b.structure("task_struct", 4, &[("thread_info", thread_info, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let message = kernel_offsets(&btf).unwrap_err().to_string();
        assert!(
            message.starts_with("kernel BTF has no member 'pid' in struct task_struct"),
            "{message}"
        );
    }

    #[test]
    fn uses_accept_only_their_shapes() {
        let layout = |size, kind| MemberLayout {
            offset: 0,
            size,
            kind,
        };
        assert!(Use::Pointer.accepts(&layout(8, ValueKind::Pointer)));
        assert!(!Use::Pointer.accepts(&layout(8, ValueKind::Integer)));
        assert!(!Use::Integer(4).accepts(&layout(8, ValueKind::Integer)));
        assert!(!Use::Embedded.accepts(&layout(16, ValueKind::Pointer)));
        let auxv = ValueKind::Array {
            element_size: 8,
            len: 56,
        };
        assert!(Use::WordArray(8).accepts(&layout(448, auxv)));
        assert!(!Use::WordArray(4).accepts(&layout(448, auxv)));
        let buf = |len| ValueKind::Array {
            element_size: 1,
            len,
        };
        assert!(Use::Bytes { at_least: 64 }.accepts(&layout(256, buf(256))));
        assert!(!Use::Bytes { at_least: 64 }.accepts(&layout(32, buf(32))));
    }
}
