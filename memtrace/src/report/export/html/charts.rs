//! The per-process charts drawn as inline SVG: mapped bytes over time by kind, and the
//! unreleased groups that grew most.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::palette;
use super::{escape, short};
use crate::report::format;
use crate::report::schema::ProcessReport;

pub(crate) const WIDTH: f64 = 600.0;
pub(crate) const HEIGHT: f64 = 240.0;
pub(crate) const LEFT: f64 = 84.0;
pub(crate) const RIGHT: f64 = 12.0;
pub(crate) const TOP: f64 = 14.0;
pub(crate) const BOTTOM: f64 = 40.0;

/// The kinds drawn, and at each time the bytes of each of them (in the same order).
type KindSeries = (Vec<&'static str>, BTreeMap<u64, Vec<u64>>);

/// Mapped bytes over the session, stacked by kind, with the chart's caption: from the
/// model's growth timeline (live bytes per group at each sample), or, when it has too few
/// samples to draw (a process that lived less than a few sampling steps), the bytes still
/// mapped at the end over the time they were created.
pub(crate) fn timeline(process: &ProcessReport, start_ns: Option<u64>) -> (&'static str, String) {
    match growth_by_kind(process) {
        Some((kinds, steps)) => (
            "Mapped bytes over time, by kind",
            stacked(process, start_ns, &kinds, &steps),
        ),
        None => {
            let (kinds, steps) = held_by_creation(process);
            (
                "Bytes still mapped at the end, by kind, over the time they were created",
                stacked(process, start_ns, &kinds, &steps),
            )
        }
    }
}

fn stacked(
    process: &ProcessReport,
    start_ns: Option<u64>,
    kinds: &[&str],
    steps: &BTreeMap<u64, Vec<u64>>,
) -> String {
    let exec_times = process.execs.iter().map(|exec| exec.time_ns);
    let times = steps.keys().copied().chain(exec_times);
    let t0 = times
        .clone()
        .min()
        .unwrap_or(0)
        .min(start_ns.unwrap_or(u64::MAX));
    let t1 = times.max().unwrap_or(t0).max(t0 + 1_000);
    let mut out = svg_open("timeline", HEIGHT, "Mapped bytes over time, by kind");
    let Some(running) = steps.values().last().cloned() else {
        out.push_str(&empty_note("no memory over time to draw"));
        out.push_str("</svg>");
        return out;
    };
    let peak = steps
        .values()
        .map(|values| values.iter().sum::<u64>())
        .max();
    let total = peak.unwrap_or(0).max(1);
    let x = |t: u64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |bytes: u64| HEIGHT - BOTTOM - bytes as f64 / total as f64 * (HEIGHT - TOP - BOTTOM);
    axes(&mut out, total, t0, t1, start_ns, &x, &y);
    // Stacked from the first kind up: each band's top is the sum of the kinds up to it.
    for (index, kind) in kinds.iter().enumerate() {
        let top_of = |values: &[u64]| values[..=index].iter().sum::<u64>();
        let base_of = |values: &[u64]| values[..index].iter().sum::<u64>();
        let mut top = Vec::new();
        let mut base = Vec::new();
        let (mut top_before, mut base_before) = (0, 0);
        for (&time, values) in steps {
            top.push((x(time), y(top_before)));
            top.push((x(time), y(top_of(values))));
            base.push((x(time), y(base_before)));
            base.push((x(time), y(base_of(values))));
            top_before = top_of(values);
            base_before = base_of(values);
        }
        top.push((x(t1), y(top_before)));
        base.push((x(t1), y(base_before)));
        let points: Vec<String> = top
            .iter()
            .chain(base.iter().rev())
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = write!(
            out,
            r#"<polygon points="{}" fill="{}" stroke="{}" stroke-width=".8"><title>{kind}: {}</title></polygon>"#,
            points.join(" "),
            palette::fill(kind),
            palette::colour(kind),
            format::bytes(running[index])
        );
    }
    for exec in &process.execs {
        let px = x(exec.time_ns);
        let name = exec.filename.rsplit('/').next().unwrap_or(&exec.filename);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" stroke="#222" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="11">exec {}</text>"##,
            HEIGHT - BOTTOM,
            px + 3.0,
            TOP + 10.0,
            escape(&short(name, 24))
        );
    }
    out.push_str("</svg>");
    out.push_str(&palette::legend(kinds));
    out
}

/// Per kind (in [`palette::KINDS`] order) and sample time, the live bytes of the growth
/// timeline's groups; what its listed groups leave out of the total counts as `other`.
fn growth_by_kind(process: &ProcessReport) -> Option<KindSeries> {
    /// Fewer points draw a line, not a history.
    const MIN_POINTS: usize = 3;
    let timeline = &process.timeline;
    if timeline.times_ns.len() < MIN_POINTS {
        return None;
    }
    let named = || timeline.groups.iter().filter(|series| !series.call_site);
    let kinds: Vec<&'static str> = palette::KINDS.into_iter().collect();
    let other = kinds.iter().position(|kind| *kind == "other")?;
    let mut steps = BTreeMap::new();
    for (point, &time) in timeline.times_ns.iter().enumerate() {
        let mut values = vec![0u64; kinds.len()];
        for series in named() {
            let index = kinds
                .iter()
                .position(|k| *k == series.kind)
                .unwrap_or(other);
            values[index] += series.bytes.get(point).copied().unwrap_or(0);
        }
        let listed: u64 = values.iter().sum();
        let total = timeline.bytes.get(point).copied().unwrap_or(listed);
        values[other] += total.saturating_sub(listed);
        steps.insert(time, values);
    }
    let used: Vec<usize> = (0..kinds.len())
        .filter(|&index| steps.values().any(|values| values[index] > 0))
        .collect();
    let steps = steps
        .into_iter()
        .map(|(time, values)| (time, used.iter().map(|&index| values[index]).collect()))
        .collect();
    Some((used.iter().map(|&index| kinds[index]).collect(), steps))
}

/// Without a growth timeline: the bytes still mapped at the end, cumulated over the time
/// they were created.
fn held_by_creation(process: &ProcessReport) -> KindSeries {
    let mut regions: Vec<(u64, u64, &str)> = process
        .unreleased
        .groups
        .iter()
        .flat_map(|group| &group.regions)
        .map(|region| (region.created_ns, region.len, region.kind))
        .collect();
    regions.sort_unstable();
    let kinds: Vec<&'static str> = palette::KINDS
        .into_iter()
        .filter(|kind| regions.iter().any(|r| r.2 == *kind))
        .collect();
    let mut steps: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut running = vec![0u64; kinds.len()];
    for (time, len, kind) in &regions {
        if let Some(index) = kinds.iter().position(|k| k == kind) {
            running[index] += len;
        }
        steps.insert(*time, running.clone());
    }
    (kinds, steps)
}

pub(crate) fn axes(
    out: &mut String,
    total: u64,
    t0: u64,
    t1: u64,
    start_ns: Option<u64>,
    x: &dyn Fn(u64) -> f64,
    y: &dyn Fn(u64) -> f64,
) {
    let bottom = HEIGHT - BOTTOM;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#555"/><line x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}" stroke="#555"/>"##,
        WIDTH - RIGHT
    );
    for fraction in [0.0, 0.5, 1.0] {
        let bytes = (total as f64 * fraction) as u64;
        let py = y(bytes);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            format::bytes(bytes)
        );
    }
    let origin = start_ns.unwrap_or(t0);
    for (t, anchor) in [(t0, "start"), (t0 + (t1 - t0) / 2, "middle"), (t1, "end")] {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="{anchor}">{}</text>"#,
            x(t),
            bottom + 15.0,
            format::since(Some(origin), t)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">time since the session started</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 32.0
    );
}

/// The unreleased groups (same kind, name and permissions) holding most bytes.
pub(crate) fn grown_groups(process: &ProcessReport, start_ns: Option<u64>) -> String {
    const SHOWN: usize = 7;
    const ROW: f64 = 33.0;
    let mut groups: Vec<_> = process.unreleased.groups.iter().collect();
    groups.sort_by_key(|group| std::cmp::Reverse(group.bytes));
    groups.truncate(SHOWN);
    let height = (groups.len().max(1) as f64 * ROW + 8.0).max(HEIGHT);
    let mut out = svg_open("groups", height, "The unreleased groups holding most bytes");
    if groups.is_empty() {
        out.push_str(&empty_note("no unreleased regions"));
        out.push_str("</svg>");
        return out;
    }
    let largest = groups[0].bytes.max(1) as f64;
    for (row, group) in groups.iter().enumerate() {
        let top = row as f64 * ROW + 4.0;
        let name = if group.name.is_empty() {
            "[anon]"
        } else {
            &group.name
        };
        let span = if group.first_created_ns == group.last_created_ns {
            format::since(start_ns, group.first_created_ns)
        } else {
            format!(
                "{}..{}",
                format::since(start_ns, group.first_created_ns),
                format::since(start_ns, group.last_created_ns)
            )
        };
        let width = (group.bytes as f64 / largest * (WIDTH - 4.0)).max(2.0);
        let _ = write!(
            out,
            r##"<text x="2" y="{:.1}" font-size="12"><tspan font-weight="600">{}</tspan> {} {} · {} · {} · {span}</text><rect x="2" y="{:.1}" width="{width:.1}" height="11" fill="{}" stroke="#333" stroke-width=".5"><title>{} {}: {} in {}</title></rect>"##,
            top + 12.0,
            format::bytes(group.bytes),
            escape(&short(name, 44)),
            group.perms,
            group.kind,
            format::count(group.count, "region"),
            top + 16.0,
            palette::fill(group.kind),
            escape(name),
            group.perms,
            format::bytes(group.bytes),
            format::count(group.count, "region"),
        );
    }
    out.push_str("</svg>");
    out
}

pub(crate) fn svg_open(class: &str, height: f64, label: &str) -> String {
    format!(
        r#"<svg class="chart {class}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{label}" font-family="system-ui, sans-serif">"#
    )
}

fn empty_note(text: &str) -> String {
    format!(
        r##"<rect x="0" y="0" width="{WIDTH}" height="30" fill="#f4f4f4"/><text x="10" y="20" font-size="13">{text}</text>"##
    )
}
