//! The Linux ABI values memtrace decodes from syscall arguments. They are the same for x86_64
//! and ia32 tasks.

pub const PROT_READ: u64 = 0x1;
pub const PROT_WRITE: u64 = 0x2;
pub const PROT_EXEC: u64 = 0x4;

pub const MAP_SHARED: u64 = 0x01;
pub const MAP_PRIVATE: u64 = 0x02;
pub const MAP_FIXED: u64 = 0x10;
pub const MAP_ANONYMOUS: u64 = 0x20;
pub const MAP_GROWSDOWN: u64 = 0x100;
pub const MAP_STACK: u64 = 0x20000;

pub const MREMAP_MAYMOVE: u64 = 1;
pub const MREMAP_FIXED: u64 = 2;
pub const MREMAP_DONTUNMAP: u64 = 4;

pub const MFD_CLOEXEC: u64 = 1;

/// The kernel is out of what a mapping needs: memory, address space (RLIMIT_AS) or mappings
/// (vm.max_map_count).
pub const ENOMEM: i32 = 12;

/// shmat's flags (include/uapi/linux/shm.h): attach read-only, or with execute permission.
pub const SHM_RDONLY: u64 = 0o10000;
pub const SHM_EXEC: u64 = 0o100000;

/// How `/proc/PID/maps` names a SysV shared memory segment: `/SYSV` and its key in eight hex
/// digits (the file `newseg` creates), followed by ` (deleted)`.
pub const SYSV_PATH_PREFIX: &str = "/SYSV";
/// How `/proc/PID/maps` names an AIO ring (a file of the kernel's aio filesystem), followed by
/// ` (deleted)`.
pub const AIO_RING_PATH: &str = "/[aio]";

/// Prefix of a memfd's path in `/proc/PID/maps` and in the file names the kernel side reports.
pub const MEMFD_PATH_PREFIX: &str = "/memfd:";

/// The page size of x86_64, the only architecture memtrace traces (both of its ABIs use it).
pub const PAGE_SIZE: u64 = 4096;
