//! Per-process syscall counts and distributions (mapping sizes, latency).

use hdrhistogram::Histogram;

use crate::event::Syscall;

/// Syscalls as reports name them: the ABI variants of one operation count together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallName {
    Mmap,
    Munmap,
    Brk,
    Mremap,
    Mprotect,
    MemfdCreate,
    Execve,
    Close,
    Shmat,
    Shmdt,
    IoSetup,
    IoDestroy,
    PkeyMprotect,
    Mseal,
    RemapFilePages,
}

impl SyscallName {
    pub const ALL: [SyscallName; 15] = [
        Self::Mmap,
        Self::Munmap,
        Self::Brk,
        Self::Mremap,
        Self::Mprotect,
        Self::MemfdCreate,
        Self::Execve,
        Self::Close,
        Self::Shmat,
        Self::Shmdt,
        Self::IoSetup,
        Self::IoDestroy,
        Self::PkeyMprotect,
        Self::Mseal,
        Self::RemapFilePages,
    ];

    /// `None` for ia32's `ipc(2)`, which never reaches a message: the kernel side reports the
    /// shmat or shmdt it made as that syscall.
    pub fn of(syscall: Syscall) -> Option<Self> {
        Some(match syscall {
            Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => Self::Mmap,
            Syscall::Munmap => Self::Munmap,
            Syscall::Brk => Self::Brk,
            Syscall::Mremap => Self::Mremap,
            Syscall::Mprotect => Self::Mprotect,
            Syscall::MemfdCreate => Self::MemfdCreate,
            Syscall::Execve | Syscall::Execveat => Self::Execve,
            Syscall::Close => Self::Close,
            Syscall::Shmat => Self::Shmat,
            Syscall::Shmdt => Self::Shmdt,
            Syscall::IoSetup => Self::IoSetup,
            Syscall::IoDestroy => Self::IoDestroy,
            Syscall::PkeyMprotect => Self::PkeyMprotect,
            Syscall::Mseal => Self::Mseal,
            Syscall::RemapFilePages => Self::RemapFilePages,
            Syscall::Ipc => return None,
        })
    }

    /// The report's name: the name of the operation's first ABI variant.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mmap => Syscall::Mmap.name(),
            Self::Munmap => Syscall::Munmap.name(),
            Self::Brk => Syscall::Brk.name(),
            Self::Mremap => Syscall::Mremap.name(),
            Self::Mprotect => Syscall::Mprotect.name(),
            Self::MemfdCreate => Syscall::MemfdCreate.name(),
            Self::Execve => Syscall::Execve.name(),
            Self::Close => Syscall::Close.name(),
            Self::Shmat => Syscall::Shmat.name(),
            Self::Shmdt => Syscall::Shmdt.name(),
            Self::IoSetup => Syscall::IoSetup.name(),
            Self::IoDestroy => Syscall::IoDestroy.name(),
            Self::PkeyMprotect => Syscall::PkeyMprotect.name(),
            Self::Mseal => Syscall::Mseal.name(),
            Self::RemapFilePages => Syscall::RemapFilePages.name(),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: u64,
    pub failed: u64,
}

/// count, median, 99th percentile and maximum of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DistributionSummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// A histogram created on the first value: most processes never call most syscalls, so an
/// unused distribution is one null pointer.
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    histogram: Option<Box<Histogram<u64>>>,
}

impl Distribution {
    /// Two significant digits: a percentile within 1% is plenty for sizes and latencies, and
    /// the histogram stays a few KiB.
    const SIGNIFICANT_DIGITS: u8 = 2;

    pub fn record(&mut self, value: u64) {
        if self.histogram.is_none() {
            self.histogram = Histogram::new(Self::SIGNIFICANT_DIGITS).ok().map(Box::new);
        }
        if let Some(histogram) = self.histogram.as_deref_mut() {
            // `record` grows the histogram to fit; `saturating_record` would clamp to its
            // current range instead. Values beyond what it can ever grow to are clamped.
            if histogram.record(value).is_err() {
                histogram.saturating_record(value);
            }
        }
    }

    pub fn summary(&self) -> DistributionSummary {
        let Some(histogram) = self.histogram.as_deref().filter(|h| !h.is_empty()) else {
            return DistributionSummary::default();
        };
        // The bucket's lowest value: a recorded 4096 reads back as 4096, not as the end of its
        // 1% bucket.
        DistributionSummary {
            count: histogram.len(),
            p50: histogram.lowest_equivalent(histogram.value_at_quantile(0.5)),
            p99: histogram.lowest_equivalent(histogram.value_at_quantile(0.99)),
            max: histogram.lowest_equivalent(histogram.max()),
        }
    }
}

/// A process's syscall counts and distributions.
///
/// While it runs they are recorded in full, in a box made at its first call (processes that
/// make none cost a null pointer). At exit they shrink to what the report shows: for each
/// syscall it made, its counts and the summaries of its distributions. A histogram is a few
/// KiB and the full record a few hundred bytes; an exited process must cost memtrace bytes.
#[derive(Clone, Debug, Default)]
pub struct SyscallStats {
    recording: Option<Box<Recording>>,
    /// After exit; the model takes no calls of an exited process.
    compacted: Box<[CompactedCalls]>,
    /// Failed calls by syscall and errno, in order of first failure: few pairs ever occur.
    failures: Vec<(SyscallName, i32, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Recording {
    counts: [CallCounts; SyscallName::ALL.len()],
    /// time_ns - entry_ns of every call, failed ones included.
    latency_ns: [Distribution; SyscallName::ALL.len()],
    /// Page-aligned lengths of successful calls (mmap: the mapping; mremap: the new length;
    /// munmap, mprotect: the range).
    sizes: [Distribution; SyscallName::ALL.len()],
}

/// One syscall's figures once its process has exited.
#[derive(Clone, Copy, Debug)]
struct CompactedCalls {
    name: SyscallName,
    counts: CallCounts,
    latency_ns: DistributionSummary,
    sizes: DistributionSummary,
}

impl SyscallStats {
    pub fn counts(&self, name: SyscallName) -> CallCounts {
        match &self.recording {
            Some(recording) => recording.counts[name.index()],
            None => self
                .compacted(name)
                .map(|calls| calls.counts)
                .unwrap_or_default(),
        }
    }

    /// The latency of every call (time_ns - entry_ns), failed ones included.
    pub fn latency_ns(&self, name: SyscallName) -> DistributionSummary {
        match &self.recording {
            Some(recording) => recording.latency_ns[name.index()].summary(),
            None => self
                .compacted(name)
                .map(|calls| calls.latency_ns)
                .unwrap_or_default(),
        }
    }

    /// Page-aligned lengths of successful calls (mmap: the mapping; mremap: the new length;
    /// munmap, mprotect: the range).
    pub fn sizes(&self, name: SyscallName) -> DistributionSummary {
        match &self.recording {
            Some(recording) => recording.sizes[name.index()].summary(),
            None => self
                .compacted(name)
                .map(|calls| calls.sizes)
                .unwrap_or_default(),
        }
    }

    fn compacted(&self, name: SyscallName) -> Option<&CompactedCalls> {
        self.compacted.iter().find(|calls| calls.name == name)
    }

    fn recording(&mut self) -> &mut Recording {
        self.recording.get_or_insert_with(Box::default)
    }

    /// Failed calls by syscall and errno (a refused brk counts as ENOMEM).
    pub fn failures(&self) -> &[(SyscallName, i32, u64)] {
        &self.failures
    }

    /// A call; `errno` when it failed.
    pub(crate) fn record_call(
        &mut self,
        name: SyscallName,
        errno: Option<i32>,
        latency_ns: Option<u64>,
    ) {
        if let Some(errno) = errno {
            match self
                .failures
                .iter_mut()
                .find(|(failed, error, _)| *failed == name && *error == errno)
            {
                Some((_, _, count)) => *count += 1,
                None => self.failures.push((name, errno, 1)),
            }
        }
        let recording = self.recording();
        let counts = &mut recording.counts[name.index()];
        counts.calls += 1;
        counts.failed += u64::from(errno.is_some());
        if let Some(latency_ns) = latency_ns {
            recording.latency_ns[name.index()].record(latency_ns);
        }
    }

    pub(crate) fn record_size(&mut self, name: SyscallName, bytes: u64) {
        self.recording().sizes[name.index()].record(bytes);
    }

    /// At exit: the figures shrink to what the report shows.
    pub(crate) fn compact(&mut self) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        self.compacted = SyscallName::ALL
            .into_iter()
            .map(|name| CompactedCalls {
                name,
                counts: recording.counts[name.index()],
                latency_ns: recording.latency_ns[name.index()].summary(),
                sizes: recording.sizes[name.index()].summary(),
            })
            .filter(|calls| {
                calls.counts != CallCounts::default()
                    || calls.latency_ns.count > 0
                    || calls.sizes.count > 0
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_stats_keep_every_figure() {
        let mut stats = SyscallStats::default();
        for value in 1..=1000 {
            stats.record_call(
                SyscallName::Mmap,
                (value % 7 == 0).then_some(12),
                Some(value * 10),
            );
            stats.record_size(SyscallName::Mmap, value * 4096);
        }
        stats.record_call(SyscallName::Munmap, Some(22), None);
        let figures = |stats: &SyscallStats| {
            SyscallName::ALL.map(|name| {
                (
                    stats.counts(name),
                    stats.latency_ns(name),
                    stats.sizes(name),
                )
            })
        };
        let before = figures(&stats);
        stats.compact();
        assert!(stats.recording.is_none());
        assert_eq!(stats.compacted.len(), 2);
        assert_eq!(figures(&stats), before);
    }
}
