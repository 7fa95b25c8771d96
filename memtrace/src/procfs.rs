//! What `/proc` tells about a process memtrace attaches to: its layout at that moment, its
//! parent, and its children.

use std::{fs, io, path::Path};

use crate::event::{AttachEvent, AttachFd, ContainerIdentity, MapsLine};
use crate::linux_abi::MEMFD_PATH_PREFIX;

pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The layout of a live process as `/proc/PID/maps` shows it, with paths as the process sees
/// them (as the kernel side names files): the maps name them from memtrace's root, so a
/// process in a chroot or container has its root's prefix cut off.
pub fn attach_layout(pid: u32) -> io::Result<AttachEvent> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let container = container_identity(pid).unwrap_or_default();
    let regions: Vec<MapsLine> = maps
        .lines()
        .filter_map(parse_maps_line)
        .map(|mut region| {
            region.name = container.process_view(&region.name).to_owned();
            region
        })
        .collect();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let start_brk = stat_field(&stat, 47).unwrap_or(0);
    // The kernel does not publish the break itself; the heap ends at it, page-aligned.
    let brk = regions
        .iter()
        .find(|r| r.name == "[heap]")
        .map_or(start_brk, |heap| heap.end);
    Ok(AttachEvent {
        regions,
        start_brk,
        brk,
        ppid: parent_of(pid).unwrap_or(0),
        exe: fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| container.process_view(&p.to_string_lossy()).to_owned())
            .unwrap_or_default(),
        memfd_fds: memfd_fds(pid),
    })
}

/// The process's open fds that refer to memfds: their link reads `/memfd:NAME (deleted)`, and
/// the inode the link leads to is the one its mappings show in `/proc/PID/maps`. An fd closed
/// while we look is simply not there.
pub fn memfd_fds(pid: u32) -> Vec<AttachFd> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<AttachFd> = entries
        .flatten()
        .filter_map(|entry| {
            let fd: u32 = entry.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(entry.path()).ok()?;
            if !target.to_string_lossy().starts_with(MEMFD_PATH_PREFIX) {
                return None;
            }
            let inode = fs::metadata(entry.path()).ok()?.ino();
            Some(AttachFd {
                fd,
                inode,
                cloexec: fd_cloexec(pid, fd),
            })
        })
        .collect();
    fds.sort_by_key(|fd| fd.fd);
    fds
}

/// Whether the fd has `O_CLOEXEC`, from the octal `flags:` line of `/proc/PID/fdinfo/FD`.
fn fd_cloexec(pid: u32, fd: u32) -> bool {
    const O_CLOEXEC: u64 = 0o2_000_000;
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            let flags = info.lines().find_map(|line| line.strip_prefix("flags:"))?;
            u64::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|flags| flags & O_CLOEXEC != 0)
}

/// One `/proc/PID/maps` line: `start-end perms offset dev inode [name]`.
pub fn parse_maps_line(line: &str) -> Option<MapsLine> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?.to_string();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _device = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let name = fields.next().unwrap_or("").trim_start().to_string();
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        inode,
        name,
    })
}

/// Field `index` (1-based, as in proc(5)) of `/proc/PID/stat`. The command name may contain
/// spaces and parentheses, so counting starts after its last `)`.
fn stat_field(stat: &str, index: usize) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm
        .split_whitespace()
        .nth(index.checked_sub(3)?)?
        .parse()
        .ok()
}

/// `PF_KTHREAD` from include/linux/sched.h: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Why a running process cannot be traced, if it cannot: a kernel thread has no user address
/// space and makes no system calls of its own; a zombie has exited and left its memory behind.
/// Attaching to either would print an empty report as if nothing happened.
pub fn untraceable_reason(pid: u32) -> Option<&'static str> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    if stat_field(&stat, 9).is_some_and(|flags| flags & PF_KTHREAD != 0) {
        return Some("it is a kernel thread, which has no user address space");
    }
    match state {
        "Z" => Some("it is a zombie: it has exited and has no address space left"),
        "X" | "x" => Some("it is exiting"),
        _ => None,
    }
}

/// Whether the process runs a 32-bit (ELFCLASS32) image.
pub fn is_ia32(pid: u32) -> bool {
    fs::File::open(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        object::FileKind::parse(&object::read::ReadCache::new(exe))
            .is_ok_and(|kind| kind == object::FileKind::Elf32)
    })
}

/// Whether the task is a kernel thread (it has no address space, but may start processes:
/// the kernel's usermode helpers are forked by kernel threads).
pub fn is_kernel_thread(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_field(&stat, 9))
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Every process in `/proc` now (memtrace's own pid namespace), in pid order.
pub fn all_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 4).map(|ppid| ppid as u32)
}

/// Every live descendant of `pid`, found through the parent links of all processes.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                if let Some(parent) = parent_of(child) {
                    parents.push((child, parent));
                }
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            if !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// The container identity of a live process; `None` once it is gone.
pub fn container_identity(pid: u32) -> Option<ContainerIdentity> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pid = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid);
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| cgroup_v2_path(&text))
        .unwrap_or_default();
    let root = fs::read_link(format!("/proc/{pid}/root"))
        .map(|root| root.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(ContainerIdentity {
        cgroup,
        ns_pid,
        root,
    })
}

/// `vm.max_map_count`: the most mappings a process may have.
pub fn max_map_count() -> Option<u64> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A live process's soft `RLIMIT_AS` in bytes (`Some(None)`: unlimited); `None` once it is
/// gone.
pub fn address_space_limit(pid: u32) -> Option<Option<u64>> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_address_space_limit(&limits)
}

/// The soft limit of the `Max address space` line of `/proc/PID/limits`.
pub fn parse_address_space_limit(limits: &str) -> Option<Option<u64>> {
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max address space"))?
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(None),
        bytes => bytes.parse().ok().map(Some),
    }
}

/// The cgroup v2 line of `/proc/PID/cgroup` (`0::/path`); v1 hierarchies are ignored.
pub fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_cannot_be_traced_but_we_can() {
        // kthreadd is pid 2 on every Linux since 2.6.
        assert_eq!(
            untraceable_reason(2),
            Some("it is a kernel thread, which has no user address space")
        );
        assert_eq!(untraceable_reason(std::process::id()), None);
    }

    #[test]
    fn reads_the_address_space_limit_as_the_kernel_prints_it() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max stack size            8388608              unlimited            bytes     \n\
                      Max address space         104857600            unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(limits), Some(Some(100 << 20)));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes     \n";
        assert_eq!(parse_address_space_limit(unlimited), Some(None));
        assert_eq!(
            address_space_limit(std::process::id()).map(|_| ()),
            Some(())
        );
        assert!(max_map_count().is_some_and(|count| count > 0));
    }

    #[test]
    fn parses_maps_lines() {
        let line = "7f9fdcb45000-7f9fdcb6b000 r-xp 00001000 fe:00 325843                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        let region = parse_maps_line(line).unwrap();
        assert_eq!(region.start, 0x7f9f_dcb4_5000);
        assert_eq!(region.end, 0x7f9f_dcb6_b000);
        assert_eq!(region.perms, "r-xp");
        assert_eq!(region.offset, 0x1000);
        assert_eq!(region.inode, 325_843);
        assert_eq!(
            region.name,
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
        let anon = parse_maps_line("7ffeca80c000-7ffeca82d000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.name, "");
        let memfd = parse_maps_line(
            "7f0000000000-7f0000400000 rw-s 00000000 00:01 1042 /memfd:doublemapper (deleted)",
        )
        .unwrap();
        assert_eq!(memfd.name, "/memfd:doublemapper (deleted)");
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn attach_layout_of_self_has_stack_and_parent() {
        let me = std::process::id();
        let layout = attach_layout(me).unwrap();
        assert!(layout.regions.iter().any(|r| r.name == "[stack]"));
        assert_eq!(layout.ppid, std::os::unix::process::parent_id());
        assert!(layout.start_brk > 0);
    }

    #[test]
    fn memfd_fds_of_self_names_an_open_memfd() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let memfd =
            nix::sys::memfd::memfd_create(c"procfs-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .unwrap();
        let file = fs::File::from(memfd);
        let inode = file.metadata().unwrap().ino();
        let fds = memfd_fds(std::process::id());
        let found = fds
            .iter()
            .find(|fd| fd.fd == file.as_raw_fd() as u32)
            .expect("the memfd's fd is listed");
        assert_eq!(found.inode, inode);
        assert!(found.cloexec);
    }

    #[test]
    fn own_identity_is_the_hosts() {
        let me = std::process::id();
        let identity = container_identity(me).unwrap();
        assert_eq!(identity.root, "/");
        assert!(identity.cgroup.starts_with('/'), "{identity:?}");
        assert_eq!(identity.process_view("/usr/bin/true"), "/usr/bin/true");
    }

    #[test]
    fn paths_inside_a_root_are_shown_as_the_process_sees_them() {
        let identity = ContainerIdentity {
            root: "/srv/roots/deb11".into(),
            ..ContainerIdentity::default()
        };
        assert_eq!(
            identity.process_view("/srv/roots/deb11/usr/bin/bash"),
            "/usr/bin/bash"
        );
        assert_eq!(
            identity.process_view("/srv/roots/deb110/x"),
            "/srv/roots/deb110/x"
        );
        assert_eq!(identity.process_view("/memfd:x"), "/memfd:x");
        assert_eq!(
            cgroup_v2_path("4:memory:/a\n0::/pod/c1\n").as_deref(),
            Some("/pod/c1")
        );
    }

    #[test]
    fn stat_field_survives_odd_command_names() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1";
        assert_eq!(stat_field(stat, 4), Some(7));
    }
}
