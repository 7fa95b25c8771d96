//! The `growing` finding: a group whose live bytes rise steadily over the session, read from
//! the process's timeline. Allocate-and-free churn (bytes that go up and down) and a steady
//! cache (flat) are not flagged: the rise must be large, fit a line well, and almost never
//! step back.

use crate::report::findings::finding;
use crate::report::format::bytes;
use crate::report::schema::{Evidence, Finding, FindingKind, GroupSeries, ProcessReport};
use crate::report::timeline::TimelineReport;

/// A rise smaller than this is no leak worth a finding.
const MIN_GROWTH_BYTES: u64 = 1 << 20;
/// The rise must span at least this long and this many samples to call it steady.
const MIN_SPAN_NS: u64 = 1_000_000_000;
const MIN_POINTS: usize = 5;
/// How well the rise must fit a line (R²): churn scatters far below it.
const MIN_FIT: f64 = 0.9;
/// At most this share of the steps along the rise may go down.
const MAX_DOWN_STEPS: f64 = 0.1;

/// The groups of a process whose live bytes rise steadily, fastest first.
pub fn growing(process: &ProcessReport) -> Vec<Finding> {
    let timeline = &process.timeline;
    let mut findings: Vec<(u64, Finding)> = timeline
        .groups
        .iter()
        .filter(|series| {
            !series.call_site
                && !crate::report::timeline::LOADED_KINDS
                    .iter()
                    .any(|kind| kind.as_str() == series.kind)
        })
        .filter_map(|series| {
            let rise = steady_rise(timeline, series)?;
            Some((rise.rate, growing_finding(process, series, &rise)))
        })
        .collect();
    findings.sort_by_key(|(rate, _)| std::cmp::Reverse(*rate));
    findings.into_iter().map(|(_, finding)| finding).collect()
}

/// A series' steady rise: where it began, its rate and what it gained.
pub(crate) struct Rise {
    pub(crate) since_ns: u64,
    pub(crate) rate: u64,
    pub(crate) grown: u64,
}

pub(crate) fn steady_rise(timeline: &TimelineReport, series: &GroupSeries) -> Option<Rise> {
    let points: Vec<(u64, u64)> = timeline
        .times_ns
        .iter()
        .copied()
        .zip(series.bytes.iter().copied())
        .collect();
    rise_of(&points)
}

/// The steady rise of `(time_ns, bytes)` points, oldest first: the one test of growth, for the
/// report's finding and the agent's trigger alike.
pub(crate) fn rise_of(points: &[(u64, u64)]) -> Option<Rise> {
    let end = *points.last()?;
    // The rise starts where the series last stood at (or below) its starting level.
    let first = points.first()?.1;
    let start = points.iter().rposition(|&(_, value)| value <= first)?;
    let rise = &points[start..];
    let grown = end.1.checked_sub(rise[0].1)?;
    if grown < MIN_GROWTH_BYTES
        || rise.len() < MIN_POINTS
        || end.0.saturating_sub(rise[0].0) < MIN_SPAN_NS
    {
        return None;
    }
    let down_steps = rise.windows(2).filter(|pair| pair[1].1 < pair[0].1).count();
    if down_steps as f64 > MAX_DOWN_STEPS * (rise.len() - 1) as f64 {
        return None;
    }
    let (rate, fit) = crate::model::timeline::trend(rise)?;
    if rate <= 0.0 || fit < MIN_FIT {
        return None;
    }
    Some(Rise {
        since_ns: rise[0].0,
        rate: rate.round() as u64,
        grown,
    })
}

fn growing_finding(process: &ProcessReport, series: &GroupSeries, rise: &Rise) -> Finding {
    let regions = series.regions.last().copied().unwrap_or(0) as u64;
    let now = series.bytes.last().copied().unwrap_or(0);
    // Anonymous memory has no name: the call site that grew with it tells whose it is.
    let top_call_site = (series.kind == "anon")
        .then(|| top_call_site(&process.timeline, series.kind))
        .flatten();
    let start_ns = process.timeline.times_ns.first().copied().unwrap_or(0);
    let since = if rise.since_ns == start_ns {
        "since the start of the trace".to_owned()
    } else {
        format!(
            "since +{:.3}s",
            rise.since_ns.saturating_sub(start_ns) as f64 / 1e9
        )
    };
    let mut seen = format!(
        "pid {} ({}): {} grows steadily at {}/s {since} (+{}), now {} region{}, {}",
        process.pid,
        process.comm,
        series.group,
        bytes(rise.rate),
        bytes(rise.grown),
        regions,
        if regions == 1 { "" } else { "s" },
        bytes(now),
    );
    if let Some(site) = &top_call_site {
        seen.push_str(&format!("; most from {site}"));
    }
    let what_to_do = match &top_call_site {
        Some(_) => "find why that call site's memory is not released (a steady rise that never levels off is a leak; a cache levels off); replay --since/--until shows what each window added",
        None => "find what keeps mapping this group and never unmaps it (a steady rise that never levels off is a leak; a cache levels off); replay --since/--until shows what each window added",
    };
    finding(
        FindingKind::Growing,
        process,
        seen,
        what_to_do.to_owned(),
        Evidence::Growing {
            group: series.group.clone(),
            bytes_per_s: rise.rate,
            regions,
            bytes: now,
            since_ns: rise.since_ns,
            grown_bytes: rise.grown,
            top_call_site,
        },
    )
}

/// The call site of this kind whose own series gained most over the session.
fn top_call_site(timeline: &TimelineReport, kind: &str) -> Option<String> {
    timeline
        .groups
        .iter()
        .filter(|series| series.call_site && series.kind == kind)
        .map(|series| {
            let first = series.bytes.first().copied().unwrap_or(0);
            let last = series.bytes.last().copied().unwrap_or(0);
            (last.saturating_sub(first), &series.group)
        })
        .filter(|(gain, _)| *gain > 0)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, site)| site.clone())
}

#[cfg(test)]
mod tests {
    use crate::event::{AttachEvent, AttachFd};
    use crate::model::testing::*;
    use crate::report::schema::{Evidence, FindingKind};
    use crate::report::{build, SessionInfo, Source};

    const PID: u32 = 77;
    const MIB: u64 = 1 << 20;
    const VIEW: u64 = 256 << 10;
    const RW: u64 = 3;
    const RX: u64 = 5;
    const BASE: u64 = 0x7f00_0000_0000;

    /// The seed-000 service attached after it grew: 3 leaked double mappings and 4 fixed 1 MiB
    /// buffers at attach, one memfd still open; then every 100 ms one more double mapping
    /// (fd closed) and a 4 MiB buffer mapped and freed.
    fn attached_leaky_service(rounds: u64) -> Feed {
        let mut feed = Feed::new();
        let mut regions = Vec::new();
        for index in 0..3 {
            let start = BASE + index * 2 * VIEW;
            let name = "/memfd:doublemapper (deleted)";
            regions.push(maps_line(start, start + VIEW, "rw-s", 500 + index, name));
            regions.push(maps_line(
                start + VIEW,
                start + 2 * VIEW,
                "r-xs",
                500 + index,
                name,
            ));
        }
        let kept = BASE + 0x100_0000;
        regions.push(maps_line(
            kept,
            kept + VIEW,
            "rw-s",
            600,
            "/memfd:kept (deleted)",
        ));
        for index in 0..4 {
            let start = BASE + 0x200_0000 + index * 2 * MIB;
            regions.push(maps_line(start, start + MIB, "rw-p", 0, ""));
        }
        feed.attach(
            PID,
            AttachEvent {
                regions,
                start_brk: 0x1000,
                brk: 0x1000,
                ppid: 1,
                exe: "/srv/leaky".to_owned(),
                memfd_fds: vec![AttachFd {
                    fd: 4,
                    inode: 600,
                    cloexec: true,
                }],
            },
        );
        for round in 0..rounds {
            feed.time_ns += 100_000_000;
            let at = BASE + 0x1000_0000 + round * 2 * VIEW;
            let view = ("doublemapper", 1000 + round, 9);
            feed.memfd_create(PID, "doublemapper", 1000 + round, 9)
                .mmap_memfd(PID, at, VIEW, RW, view)
                .mmap_memfd(PID, at + VIEW, VIEW, RX, view)
                .close(PID, 9);
            let churn = BASE + 0x4000_0000;
            feed.mmap_anon(PID, churn, 4 * MIB, RW)
                .munmap(PID, churn, 4 * MIB);
        }
        feed
    }

    fn report(feed: &Feed) -> crate::report::Report {
        let info = SessionInfo {
            source: Source::Replay,
            events: feed.model.events(),
            lost: Default::default(),
            backend: None,
        };
        build(&feed.model, &info)
    }

    #[test]
    fn a_steady_memfd_leak_is_growing_and_counted_from_before_attach() {
        let report = report(&attached_leaky_service(40));
        let growing: Vec<_> = report
            .findings
            .iter()
            .filter(|finding| finding.kind == FindingKind::Growing)
            .collect();
        assert_eq!(growing.len(), 1, "{:#?}", report.findings);
        let Evidence::Growing {
            group,
            bytes_per_s,
            regions,
            ..
        } = &growing[0].evidence
        else {
            panic!("not growing evidence");
        };
        assert_eq!(group, "memfd:doublemapper");
        // 2 views of 256 KiB every 100 ms (each round also takes a few µs of events).
        let truth = (2 * VIEW * 10) as f64;
        let error = (*bytes_per_s as f64 - truth).abs() / truth;
        assert!(error < 0.02, "{bytes_per_s} B/s vs {truth}");
        assert_eq!(*regions, 2 * 3 + 2 * 40);

        let memfd = report
            .findings
            .iter()
            .find_map(|finding| match &finding.evidence {
                Evidence::UnreleasedMemfd {
                    name,
                    regions,
                    at_attach,
                    during_trace,
                    ..
                } if name == "memfd:doublemapper" => Some((*regions, *at_attach, *during_trace)),
                _ => None,
            })
            .expect("an unreleased-memfd finding");
        assert_eq!(memfd, (86, 6, 80));
        // The memfd whose fd is still open is no closed-fd leak.
        assert!(!report
            .findings
            .iter()
            .any(|finding| finding.message.contains("memfd:kept")));
        let timeline = &report.processes[0].timeline;
        assert!(timeline.times_ns.len() >= 40);
        assert!(timeline
            .groups
            .iter()
            .all(|series| series.bytes.len() == timeline.times_ns.len()));
    }

    #[test]
    fn churn_and_a_fixed_cache_are_not_growing() {
        let mut feed = attached_leaky_service(0);
        for _ in 0..40 {
            feed.time_ns += 100_000_000;
            let churn = BASE + 0x4000_0000;
            feed.mmap_anon(PID, churn, 4 * MIB, RW)
                .munmap(PID, churn, 4 * MIB);
        }
        let report = report(&feed);
        assert!(
            !report
                .findings
                .iter()
                .any(|finding| finding.kind == FindingKind::Growing),
            "{:#?}",
            report.findings
        );
    }
}
