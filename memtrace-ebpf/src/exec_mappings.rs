//! The mappings the kernel makes itself while loading a new image.
//!
//! Between execve's entry and `sched_process_exec` the ELF loader maps the executable's and
//! ld.so's segments (`do_mmap`), trims reservations (`vm_munmap`), adds bss (`vm_brk_flags`)
//! and installs the vdso and vvar pages (`_install_special_mapping`). None of this is a
//! syscall, yet it is the layout the program starts from. fexit sees each call with its result;
//! only calls made by a task that is inside a traced execve are reported.

use aya_ebpf::{macros::fexit, programs::FExitContext};
use memtrace_common::{exec_mapping_kind, Abi, EventKind, ExecMappingEvent, Syscall};

use crate::{
    emit::{current_ids, header, reserve, submit_flags},
    kernel::{fill_file_path, offset, read_kernel_string, read, KernelPtr},
    PENDING,
};

/// The current task is loading a new image for a traced execve.
fn in_traced_exec(tid: u32) -> bool {
    match PENDING.get_ptr(&tid) {
        // SAFETY: valid map value pointer for the duration of this program.
        Some(pending) => {
            let syscall = unsafe { (*pending).syscall };
            syscall == Syscall::Execve as u32 || syscall == Syscall::Execveat as u32
        }
        None => false,
    }
}

fn is_error(value: u64) -> bool {
    value >= (-4095i64) as u64
}

struct Change {
    kind: u32,
    start: u64,
    len: u64,
    prot: u64,
    flags: u64,
    pgoff: u64,
}

fn emit(change: Change, file: KernelPtr, special_name: KernelPtr) -> Result<(), i64> {
    let (tgid, tid) = current_ids();
    let mut entry = reserve::<ExecMappingEvent>().ok_or(0i64)?;
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a reservation of an ExecMappingEvent; all fields read by userspace
    // are written.
    unsafe {
        (*event).header = header(EventKind::ExecMapping, Abi::Unknown, tgid, tid);
        (*event).kind = change.kind;
        (*event)._pad = 0;
        (*event).start = change.start;
        (*event).len = change.len;
        (*event).prot = change.prot;
        (*event).flags = change.flags;
        (*event).pgoff = change.pgoff;
        (*event).has_file = 0;
        (*event)._pad2 = 0;
        (*event).file.inode = 0;
        (*event).file.depth = 0;
        (*event).file.truncated = 0;
        if !file.is_null() && fill_file_path(file, &raw mut (*event).file).is_ok() {
            (*event).has_file = 1;
        }
        if !special_name.is_null() {
            read_kernel_string(special_name, &mut (*event).file.components[0]);
            (*event).file.depth = 1;
        }
    }
    entry.submit(submit_flags());
    Ok(())
}

/// `unsigned long do_mmap(struct file *file, unsigned long addr, unsigned long len,
///  unsigned long prot, unsigned long flags, vm_flags_t vm_flags, unsigned long pgoff,
///  unsigned long *populate, struct list_head *uf)`
#[fexit(function = "do_mmap")]
pub fn exec_do_mmap(ctx: FExitContext) -> i32 {
    let (_, tid) = current_ids();
    if !in_traced_exec(tid) {
        return 0;
    }
    let Ok(start) = ctx.ret::<u64>() else {
        return 0;
    };
    if is_error(start) {
        return 0;
    }
    let change = Change {
        kind: exec_mapping_kind::MMAP,
        start,
        len: ctx.arg(2),
        prot: ctx.arg(3),
        flags: ctx.arg(4),
        pgoff: ctx.arg(6),
    };
    let _ = emit(change, ctx.arg(0), core::ptr::null());
    0
}

/// `int vm_munmap(unsigned long start, size_t len)`
#[fexit(function = "vm_munmap")]
pub fn exec_vm_munmap(ctx: FExitContext) -> i32 {
    let (_, tid) = current_ids();
    if !in_traced_exec(tid) || ctx.ret::<i64>() != Ok(0) {
        return 0;
    }
    let change = Change {
        kind: exec_mapping_kind::MUNMAP,
        start: ctx.arg(0),
        len: ctx.arg(1),
        prot: 0,
        flags: 0,
        pgoff: 0,
    };
    let _ = emit(change, core::ptr::null(), core::ptr::null());
    0
}

/// `int vm_brk_flags(unsigned long addr, unsigned long request, vm_flags_t vm_flags)`: the
/// loader's bss.
#[fexit(function = "vm_brk_flags")]
pub fn exec_vm_brk_flags(ctx: FExitContext) -> i32 {
    let (_, tid) = current_ids();
    if !in_traced_exec(tid) || ctx.ret::<i64>() != Ok(0) {
        return 0;
    }
    const PROT_READ_WRITE: u64 = 0x3;
    let change = Change {
        kind: exec_mapping_kind::BSS,
        start: ctx.arg(0),
        len: ctx.arg(1),
        prot: PROT_READ_WRITE,
        flags: 0,
        pgoff: 0,
    };
    let _ = emit(change, core::ptr::null(), core::ptr::null());
    0
}

/// `struct vm_area_struct *_install_special_mapping(struct mm_struct *mm, unsigned long addr,
///  unsigned long len, vm_flags_t vm_flags, const struct vm_special_mapping *spec)`
#[fexit(function = "_install_special_mapping")]
pub fn exec_special_mapping(ctx: FExitContext) -> i32 {
    let (_, tid) = current_ids();
    if !in_traced_exec(tid) {
        return 0;
    }
    match ctx.ret::<u64>() {
        Ok(vma) if vma != 0 && !is_error(vma) => {}
        _ => return 0,
    }
    // VM_READ, VM_WRITE and VM_EXEC have the same values as PROT_*.
    let vm_flags: u64 = ctx.arg(3);
    let spec: KernelPtr = ctx.arg(4);
    let name: KernelPtr = read(spec, offset!(special_mapping_name)).unwrap_or(core::ptr::null());
    let change = Change {
        kind: exec_mapping_kind::SPECIAL,
        start: ctx.arg(1),
        len: ctx.arg(2),
        prot: vm_flags & 0x7,
        flags: 0,
        pgoff: 0,
    };
    let _ = emit(change, core::ptr::null(), name);
    0
}
