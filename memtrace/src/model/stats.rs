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
}

impl SyscallName {
    pub const ALL: [SyscallName; 8] = [
        Self::Mmap,
        Self::Munmap,
        Self::Brk,
        Self::Mremap,
        Self::Mprotect,
        Self::MemfdCreate,
        Self::Execve,
        Self::Close,
    ];

    /// The ones that shape the address space; `close` is tracked only for memfds.
    pub const MEMORY: [SyscallName; 7] = [
        Self::Mmap,
        Self::Munmap,
        Self::Brk,
        Self::Mremap,
        Self::Mprotect,
        Self::MemfdCreate,
        Self::Execve,
    ];

    pub fn of(syscall: Syscall) -> Self {
        match syscall {
            Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => Self::Mmap,
            Syscall::Munmap => Self::Munmap,
            Syscall::Brk => Self::Brk,
            Syscall::Mremap => Self::Mremap,
            Syscall::Mprotect => Self::Mprotect,
            Syscall::MemfdCreate => Self::MemfdCreate,
            Syscall::Execve | Syscall::Execveat => Self::Execve,
            Syscall::Close => Self::Close,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Munmap => "munmap",
            Self::Brk => "brk",
            Self::Mremap => "mremap",
            Self::Mprotect => "mprotect",
            Self::MemfdCreate => "memfd_create",
            Self::Execve => "execve",
            Self::Close => "close",
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

/// A histogram created on the first value: most processes never call most syscalls. Once its
/// process has exited it is compacted to the summary the report shows (a histogram is a few
/// KiB; an exited process must cost memtrace bytes, not kilobytes).
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    histogram: Option<Histogram<u64>>,
    frozen: Option<DistributionSummary>,
}

impl Distribution {
    /// Two significant digits: a percentile within 1% is plenty for sizes and latencies, and
    /// the histogram stays a few KiB.
    const SIGNIFICANT_DIGITS: u8 = 2;

    pub fn record(&mut self, value: u64) {
        if self.frozen.is_some() {
            return;
        }
        if self.histogram.is_none() {
            self.histogram = Histogram::new(Self::SIGNIFICANT_DIGITS).ok();
        }
        if let Some(histogram) = &mut self.histogram {
            // `record` grows the histogram to fit; `saturating_record` would clamp to its
            // current range instead. Values beyond what it can ever grow to are clamped.
            if histogram.record(value).is_err() {
                histogram.saturating_record(value);
            }
        }
    }

    /// Keeps only the summary; later values are not recorded.
    pub(crate) fn compact(&mut self) {
        if let Some(histogram) = self.histogram.take() {
            let summary = Self::summarize(&histogram);
            self.frozen = Some(summary);
        }
    }

    pub fn summary(&self) -> DistributionSummary {
        if let Some(frozen) = self.frozen {
            return frozen;
        }
        match &self.histogram {
            Some(histogram) => Self::summarize(histogram),
            None => DistributionSummary::default(),
        }
    }

    fn summarize(histogram: &Histogram<u64>) -> DistributionSummary {
        if histogram.is_empty() {
            return DistributionSummary::default();
        }
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

#[derive(Clone, Debug, Default)]
pub struct SyscallStats {
    counts: [CallCounts; 8],
    /// time_ns - entry_ns of every call, failed ones included.
    latency_ns: [Distribution; 8],
    /// Page-aligned lengths of successful calls (mmap: the mapping; mremap: the new length;
    /// munmap, mprotect: the range).
    sizes: [Distribution; 8],
}

impl SyscallStats {
    pub fn counts(&self, name: SyscallName) -> CallCounts {
        self.counts[name.index()]
    }

    pub fn latency_ns(&self, name: SyscallName) -> &Distribution {
        &self.latency_ns[name.index()]
    }

    pub fn sizes(&self, name: SyscallName) -> &Distribution {
        &self.sizes[name.index()]
    }

    pub(crate) fn record_call(&mut self, name: SyscallName, failed: bool, latency_ns: Option<u64>) {
        let counts = &mut self.counts[name.index()];
        counts.calls += 1;
        counts.failed += u64::from(failed);
        if let Some(latency_ns) = latency_ns {
            self.latency_ns[name.index()].record(latency_ns);
        }
    }

    pub(crate) fn record_size(&mut self, name: SyscallName, bytes: u64) {
        self.sizes[name.index()].record(bytes);
    }

    /// At exit: the distributions shrink to their summaries.
    pub(crate) fn compact(&mut self) {
        for distribution in self.latency_ns.iter_mut().chain(&mut self.sizes) {
            distribution.compact();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_distribution_keeps_its_summary() {
        let mut distribution = Distribution::default();
        for value in 1..=1000 {
            distribution.record(value * 4096);
        }
        let summary = distribution.summary();
        distribution.compact();
        assert!(distribution.histogram.is_none());
        assert_eq!(distribution.summary(), summary);
    }
}
