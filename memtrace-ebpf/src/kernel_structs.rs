//! Reading kernel structures through the offsets userspace resolved from BTF.
//!
//! aya-ebpf has no CO-RE field relocations, so instead of compiled-in struct layouts every
//! field access goes through [`offset!`], which reads the offset from the `OFFSETS` global at
//! run time. The same object therefore works on any kernel whose BTF userspace can read.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
};
use memtrace_common::{Abi, FilePath, Identity, PATH_COMPONENTS};

use crate::OFFSETS;

/// The offset of a kernel struct field, as userspace wrote it before load.
///
/// `read_volatile` keeps the compiler from folding the all-zero initial value into the code.
macro_rules! offset {
    ($field:ident) => {
        $crate::kernel_structs::load_offset(&raw const $crate::OFFSETS.$field)
    };
}
pub(crate) use offset;

#[inline(always)]
pub fn load_offset(field: *const u32) -> usize {
    // SAFETY: `field` points into the immutable `OFFSETS` global.
    unsafe { core::ptr::read_volatile(field) as usize }
}

/// A kernel pointer we only ever pass to `bpf_probe_read_kernel`: never dereferenced directly.
pub type KernelPtr = *const u8;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: KernelPtr, offset: usize) -> Result<T, i64> {
    // SAFETY: `bpf_probe_read_kernel` checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }.map_err(|e| e as i64)
}

pub fn current_task() -> KernelPtr {
    // SAFETY: the helper takes no arguments and returns the running task.
    unsafe { bpf_get_current_task() as KernelPtr }
}

/// The ABI of the syscall the current task is making.
///
/// The syscall number alone cannot tell: ia32 and x86_64 numbers overlap. The kernel marks an
/// ia32 syscall with `TS_COMPAT` in `thread_info.status` for exactly its duration (also when a
/// 64-bit program uses `int 0x80`), which is what `in_ia32_syscall()` checks.
pub fn current_abi() -> Abi {
    let status_offset = offset!(task_thread_info) + offset!(thread_info_status);
    let ts_compat = unsafe { core::ptr::read_volatile(&raw const OFFSETS.ts_compat) };
    match read::<u32>(current_task(), status_offset) {
        Ok(status) if status & ts_compat != 0 => Abi::I386,
        Ok(_) => Abi::X86_64,
        Err(_) => Abi::Unknown,
    }
}

/// Who `task` is: its cgroup v2 id and its ids in its own pid namespace (0 where a read
/// fails). Read through the task rather than with `bpf_get_current_cgroup_id`, so that it also
/// serves a task that is not the current one (a fork's child, a renamed task).
pub fn identity(task: KernelPtr) -> Identity {
    let cgroup_id = (|| -> Result<u64, i64> {
        let css_set: KernelPtr = read(task, offset!(task_cgroups))?;
        let cgroup: KernelPtr = read(css_set, offset!(css_set_dfl_cgrp))?;
        let node: KernelPtr = read(cgroup, offset!(cgroup_kn))?;
        read(node, offset!(kernfs_node_id))
    })()
    .unwrap_or(0);
    let thread_pid: KernelPtr = read(task, offset!(task_thread_pid)).unwrap_or(core::ptr::null());
    let signal: KernelPtr = read(task, offset!(task_signal)).unwrap_or(core::ptr::null());
    // `pids[PIDTYPE_TGID]`: PIDTYPE_PID is 0, PIDTYPE_TGID 1 (include/linux/pid_types.h).
    let tgid_pid: KernelPtr = read(signal, offset!(signal_pids) + 8).unwrap_or(core::ptr::null());
    Identity {
        cgroup_id,
        ns_tgid: pid_in_own_namespace(tgid_pid),
        ns_tid: pid_in_own_namespace(thread_pid),
    }
}

/// A `struct pid`'s number in the namespace it was made in, the innermost one:
/// `numbers[level].nr` (what `pid_vnr` gives the task itself).
fn pid_in_own_namespace(pid: KernelPtr) -> u32 {
    if pid.is_null() {
        return 0;
    }
    let Ok(level) = read::<u32>(pid, offset!(pid_level)) else {
        return 0;
    };
    // Namespaces nest at most 32 deep (MAX_PID_NS_LEVEL).
    let level = (level & 31) as usize;
    let upid = offset!(pid_numbers) + level * offset!(upid_size) + offset!(upid_nr);
    read::<u32>(pid, upid).unwrap_or(0)
}

/// The `struct file` behind a descriptor of the current task.
pub fn file_of_fd(fd: u32) -> Result<KernelPtr, i64> {
    let files: KernelPtr = read(current_task(), offset!(task_files))?;
    let fdt: KernelPtr = read(files, offset!(files_fdt))?;
    let max_fds: u32 = read(fdt, offset!(fdtable_max_fds))?;
    if fd >= max_fds {
        return Err(-9); // EBADF
    }
    let fd_array: KernelPtr = read(fdt, offset!(fdtable_fd))?;
    let file: KernelPtr = read(fd_array, fd as usize * 8)?;
    if file.is_null() {
        return Err(-9);
    }
    Ok(file)
}

/// Fills `out` with the file's inode and its path as the current task sees it: one dentry name
/// per slot from the file up, crossing mount points, to the task's root directory (`fs->root`,
/// as `d_path` does), so a process in a chroot or a container gets the paths it uses itself,
/// not the host's. A file outside the task's root gets its path from the global root. `bpf_d_path` would do this but is only allowed from a
/// few attach points, none of ours.
///
/// Every step fills exactly one slot, an empty one when it crosses a mount point: the walk's
/// two branches then leave the verifier identical states, which it can merge. (Counting only
/// names made the states differ by path and the verifier's work exponential.)
///
/// # Safety
/// `out` must point to writable memory for a `FilePath` (a ring-buffer reservation).
///
/// Inlined: 6.1's verifier prunes far less across calls (see `syscalls::exit_syscall`).
#[inline(always)]
pub unsafe fn fill_file_path(file: KernelPtr, out: *mut FilePath) -> Result<(), i64> {
    let out = unsafe { &mut *out };
    out.depth = PATH_COMPONENTS as u32;
    out.truncated = 1;
    let inode: KernelPtr = read(file, offset!(file_f_inode))?;
    out.inode = read(inode, offset!(inode_i_ino))?;

    let f_path = offset!(file_f_path);
    let mut dentry: KernelPtr = read(file, f_path + offset!(path_dentry))?;
    let mut vfsmount: KernelPtr = read(file, f_path + offset!(path_mnt))?;
    // `struct vfsmount` is embedded in `struct mount`, which knows where it is mounted.
    let mut mount: KernelPtr = vfsmount.wrapping_sub(offset!(mount_mnt));
    let fs: KernelPtr = read(current_task(), offset!(task_fs))?;
    let root = offset!(fs_struct_root);
    let root_dentry: KernelPtr = read(fs, root + offset!(path_dentry))?;
    let root_mnt: KernelPtr = read(fs, root + offset!(path_mnt))?;

    for slot in 0..PATH_COMPONENTS {
        let component = &mut out.components[slot];
        component[0] = 0;
        if dentry == root_dentry && vfsmount == root_mnt {
            out.depth = slot as u32;
            out.truncated = 0;
            return Ok(());
        }
        let mount_root: KernelPtr = read(vfsmount, offset!(vfsmount_mnt_root))?;
        if dentry == mount_root {
            let parent_mount: KernelPtr = read(mount, offset!(mount_mnt_parent))?;
            if parent_mount == mount {
                out.depth = slot as u32;
                out.truncated = 0;
                return Ok(());
            }
            dentry = read(mount, offset!(mount_mnt_mountpoint))?;
            mount = parent_mount;
            vfsmount = mount.wrapping_add(offset!(mount_mnt));
            continue;
        }
        let name: KernelPtr = read(dentry, offset!(dentry_d_name_name))?;
        // SAFETY: the helper bounds the copy by the slot and checks the source address; on
        // failure the slot stays empty.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, component) };
        let parent: KernelPtr = read(dentry, offset!(dentry_d_parent))?;
        if parent == dentry {
            // A root that is not its mount's root: a pseudo file (memfd, anonymous inode)
            // whose dentry is its own parent. Its name is the whole path.
            out.depth = slot as u32 + 1;
            out.truncated = 0;
            return Ok(());
        }
        dentry = parent;
    }
    Ok(())
}

/// Copies a NUL-terminated kernel string into `out` (empty on failure).
pub fn read_kernel_string(src: KernelPtr, out: &mut [u8]) {
    if src.is_null() || unsafe { bpf_probe_read_kernel_str_bytes(src, out) }.is_err() {
        if let Some(first) = out.first_mut() {
            *first = 0;
        }
    }
}
