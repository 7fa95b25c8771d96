//! What the kernel's answer to shmat and io_setup implies but does not say: how much they
//! mapped. shmat returns only an address, and the segment's size is a property of the segment;
//! io_setup writes only the ring's address, and the ring's size follows from `nr_events` and
//! the number of possible CPUs. Capture reads it from `/proc` as it decodes the event, into the
//! argument slots the syscall leaves free ([`completed_args`]), so the event carries it: the
//! model, the recording and a replay elsewhere need nothing else.
//!
//! Read within a drain of the kernel's write (≤ 50 ms), while the process most often still
//! runs and has the mapping:
//! - shmat: the process's own `/proc/PID/maps` at the returned address, checked against the
//!   segment's id (its inode there): exact, in whatever IPC namespace the process lives. If it
//!   is gone (or already detached), `/proc/sysvipc/shm` by id: a segment cannot be destroyed
//!   while attached, even after `IPC_RMID`, so it is there unless every process detached it
//!   meanwhile; then the size stays 0 and the model maps nothing (the attachment was undone by
//!   then anyway). That table shows the key of a segment marked for removal (`IPC_RMID`) as 0,
//!   as the kernel resets it, so such a segment is named `/SYSV00000000` there. It is memtrace's
//!   IPC namespace's: for a process of another one that is gone this early, a segment of the
//!   same id here would be taken for its own.
//! - io_setup: `/proc/PID/maps` at the ring's address; if the process is gone, the kernel's
//!   own arithmetic (fs/aio.c).

use std::fs;

use crate::event::{completed_args, Abi, Event, EventBody, MapsLine, Syscall, IO_SETUP_RING_ARG};
use crate::linux_abi::{AIO_RING_PATH, PAGE_SIZE, SYSV_PATH_PREFIX};
use crate::procfs;

/// What `/proc` said about one attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attached {
    /// Bytes, page-aligned.
    size: u64,
    /// The SysV key (shmat only).
    key: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Completion {
    /// The number of possible CPUs, read once (`/sys/devices/system/cpu/possible`).
    possible_cpus: Option<u64>,
}

impl Completion {
    /// Fills in what a successful shmat or io_setup mapped.
    pub(crate) fn complete(&mut self, event: &mut Event) {
        let EventBody::Syscall(call) = &mut event.body else {
            return;
        };
        if call.failed() {
            return;
        }
        match call.syscall {
            Syscall::Shmat => {
                let address = match event.abi {
                    Abi::I386 => call.ret as u64 & u64::from(u32::MAX),
                    _ => call.ret as u64,
                };
                // shmid is an int.
                let shmid = u64::from(call.args[0] as u32);
                let attached = attached_in_maps(event.pid, address, |line| {
                    line.inode == shmid && line.name.starts_with(SYSV_PATH_PREFIX)
                })
                .map(|(size, line)| Attached {
                    size,
                    key: sysv_key(&line.name).unwrap_or(0),
                })
                .or_else(|| segment_in_sysvipc(shmid));
                let attached = attached.unwrap_or(Attached { size: 0, key: 0 });
                call.args[completed_args::SHMAT_SIZE] = attached.size;
                call.args[completed_args::SHMAT_KEY] = u64::from(attached.key);
                call.args[5] = 0;
            }
            Syscall::IoSetup => {
                let ring = call.args[IO_SETUP_RING_ARG];
                let size = match attached_in_maps(event.pid, ring, |line| {
                    line.name.trim_end_matches(DELETED) == AIO_RING_PATH
                }) {
                    Some((size, _)) => size,
                    None if ring != 0 => aio_ring_bytes(call.args[0], self.possible_cpus()),
                    None => 0,
                };
                call.args[completed_args::IO_SETUP_RING_SIZE] = size;
            }
            _ => {}
        }
    }

    fn possible_cpus(&mut self) -> u64 {
        *self.possible_cpus.get_or_insert_with(|| {
            fs::read_to_string("/sys/devices/system/cpu/possible")
                .ok()
                .and_then(|list| cpu_count(&list))
                .unwrap_or(1)
        })
    }
}

const DELETED: &str = " (deleted)";

/// The bytes mapped from `address` on by the object whose first maps line there `is_it`
/// accepts: that line and the ones after it of the same object (an mprotect splits one),
/// each at the offset its distance from `address` gives. With the first line.
fn attached_in_maps(
    pid: u32,
    address: u64,
    is_it: impl Fn(&MapsLine) -> bool,
) -> Option<(u64, MapsLine)> {
    if address == 0 {
        return None;
    }
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut lines = maps
        .lines()
        .filter_map(procfs::parse_maps_line)
        .skip_while(|line| line.start != address);
    let first = lines
        .next()
        .filter(|line| is_it(line) && line.offset == 0)?;
    let mut end = first.end;
    for line in lines {
        if line.start != end || line.inode != first.inode || line.offset != line.start - address {
            break;
        }
        end = line.end;
    }
    Some((end - address, first))
}

/// The key in a SysV segment's name (`/SYSV%08x`).
fn sysv_key(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(SYSV_PATH_PREFIX)?.get(..8)?;
    u32::from_str_radix(digits, 16).ok()
}

/// The segment `shmid` as `/proc/sysvipc/shm` lists it: its size, page-aligned, and key.
fn segment_in_sysvipc(shmid: u64) -> Option<Attached> {
    let table = fs::read_to_string("/proc/sysvipc/shm").ok()?;
    sysvipc_segment(&table, shmid)
}

/// By hand rather than with the procfs crate: its parser reads uids as 16-bit and so rejects
/// the whole table when one segment belongs to a user above 65535 (any user namespace's).
/// Only the first four columns matter here: key, shmid, perms, size.
fn sysvipc_segment(table: &str, shmid: u64) -> Option<Attached> {
    table.lines().skip(1).find_map(|line| {
        let mut columns = line.split_whitespace();
        let key: i32 = columns.next()?.parse().ok()?;
        let id: u64 = columns.next()?.parse().ok()?;
        let size: u64 = columns.nth(1)?.parse().ok()?;
        (id == shmid).then(|| Attached {
            size: size.div_ceil(PAGE_SIZE) * PAGE_SIZE,
            key: key as u32,
        })
    })
}

/// The bytes io_setup maps for `nr_events`, as fs/aio.c sizes them: `ioctx_alloc` makes room
/// for at least four events per possible CPU and doubles that (half may sit in other CPUs'
/// caches), `aio_setup_ring` adds two, and the ring is its 32-byte header and one 32-byte
/// `io_event` per event, in whole pages.
fn aio_ring_bytes(nr_events: u64, possible_cpus: u64) -> u64 {
    const RING_HEADER: u64 = 32;
    const IO_EVENT: u64 = 32;
    let events = u64::from(nr_events as u32).max(possible_cpus * 4) * 2 + 2;
    (RING_HEADER + IO_EVENT * events).div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The number of CPUs in a kernel CPU list (`0-3,8-11`).
fn cpu_count(list: &str) -> Option<u64> {
    let mut count = 0;
    for range in list.trim().split(',').filter(|range| !range.is_empty()) {
        count += match range.split_once('-') {
            Some((first, last)) => last.parse::<u64>().ok()? - first.parse::<u64>().ok()? + 1,
            None => {
                range.parse::<u64>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own figures: io_setup(128) on 2 possible CPUs maps 3 pages (258 events,
    /// as /proc/PID/maps shows on this machine); io_setup(1) on 64 CPUs makes room for 514.
    #[test]
    fn an_aio_ring_is_sized_as_the_kernel_sizes_it() {
        assert_eq!(aio_ring_bytes(128, 2), 3 * PAGE_SIZE);
        assert_eq!(aio_ring_bytes(1, 64), 5 * PAGE_SIZE);
        assert_eq!(aio_ring_bytes(4096, 2), 65 * PAGE_SIZE);
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_count("0-1\n"), Some(2));
        assert_eq!(cpu_count("0\n"), Some(1));
        assert_eq!(cpu_count("0-3,8-11"), Some(8));
        assert_eq!(cpu_count("x"), None);
    }

    #[test]
    fn sysvipc_rows_give_size_and_key() {
        let table = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0         43  1600              16777216 22235 22235      1     0     0     0     0 1796597953          0 1796597953                     0                     0
      4660         44   600               1048577 22235 22235      1 100000 100000 100000 100000 1796597953          0 1796597953                     0                     0
";
        assert_eq!(
            sysvipc_segment(table, 43),
            Some(Attached {
                size: 16 << 20,
                key: 0
            })
        );
        assert_eq!(
            sysvipc_segment(table, 44),
            Some(Attached {
                size: (1 << 20) + PAGE_SIZE,
                key: 0x1234
            })
        );
        assert_eq!(sysvipc_segment(table, 45), None);
        assert_eq!(sysv_key("/SYSV00001234 (deleted)"), Some(0x1234));
        assert_eq!(sysv_key("/SYSVffffffff"), Some(u32::MAX));
    }
}
