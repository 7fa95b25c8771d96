//! The page's overview of the session: mapped and allocated bytes over time stacked by
//! program (the programs holding most named, the rest grouped), and the ranked table of every
//! process and folded program, sortable by any column, a row opening its process.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::charts::{axes, svg_open, HEIGHT, LEFT, RIGHT, TOP, WIDTH};
use super::escape;
use crate::report::format;
use crate::report::ranking::{self, RankedRow};
use crate::report::schema::Report;

/// Programs drawn each in a band of their own; the others share one.
const NAMED_PROGRAMS: usize = 7;
/// Points of the session's time the stacked charts are drawn on.
const POINTS: usize = 160;
/// Okabe and Ito's palette, told apart with the common kinds of colour blindness; the legend
/// names each band and every band names itself on hover, so colour is never the only cue.
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
];

/// Which bytes a stacked chart draws.
#[derive(Clone, Copy)]
pub(crate) enum Measure {
    Mapped,
    Allocated,
}

/// The session's bytes over time, stacked by program, with its caption.
pub(crate) fn stacked_by_program(report: &Report, measure: Measure) -> (String, String) {
    let what = match measure {
        Measure::Mapped => "Mapped bytes",
        Measure::Allocated => "Allocated bytes (not files, stacks or the vdso)",
    };
    let start = report.start_ns.unwrap_or(0);
    let end = start + report.summary.span_ns.max(1);
    let times: Vec<u64> = (0..POINTS)
        .map(|index| start + (end - start) * index as u64 / (POINTS as u64 - 1))
        .collect();
    // Each program's bytes at each point: its processes' last sample at or before it, from
    // their first sample to their exit (or the end).
    let mut programs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for process in &report.processes {
        let timeline = &process.timeline;
        let series = match measure {
            Measure::Mapped => &timeline.bytes,
            Measure::Allocated => &timeline.allocated,
        };
        let (Some(&first), Some(&last)) = (timeline.times_ns.first(), timeline.times_ns.last())
        else {
            continue;
        };
        let values = programs
            .entry(process.comm.as_str())
            .or_insert_with(|| vec![0; POINTS]);
        let mut sample = 0;
        for (point, &time) in times.iter().enumerate() {
            if time < first || (!process.alive && time > last) {
                continue;
            }
            while sample + 1 < timeline.times_ns.len() && timeline.times_ns[sample + 1] <= time {
                sample += 1;
            }
            values[point] += series.get(sample).copied().unwrap_or(0);
        }
    }
    let mut bands: Vec<(String, Vec<u64>)> = programs
        .into_iter()
        .map(|(name, values)| (name.to_owned(), values))
        .collect();
    bands.sort_by_key(|(name, values)| {
        (
            std::cmp::Reverse(values.iter().copied().max().unwrap_or(0)),
            name.clone(),
        )
    });
    if bands.len() > NAMED_PROGRAMS + 1 {
        let rest = bands.split_off(NAMED_PROGRAMS);
        let mut other = vec![0u64; POINTS];
        for (_, values) in &rest {
            for (sum, value) in other.iter_mut().zip(values) {
                *sum += value;
            }
        }
        bands.push((format!("{} other programs", rest.len()), other));
    }
    let caption = format!(
        "{what} over time, stacked by program{}",
        if report.summary.exited.folded_processes > 0 {
            " (folded processes are summed at their exits, not drawn)"
        } else {
            ""
        }
    );
    (caption, draw(report, &times, &bands, what))
}

/// A session shorter than this has too few samples to draw over time.
const MIN_DRAWN_SPAN_NS: u64 = 3 * crate::model::timeline::FIRST_STEP_NS;

/// Whether the session lasted long enough to draw it over time.
pub(crate) fn drawable(report: &Report) -> bool {
    report.summary.span_ns >= MIN_DRAWN_SPAN_NS
}

fn draw(report: &Report, times: &[u64], bands: &[(String, Vec<u64>)], what: &str) -> String {
    let mut out = svg_open("overview", HEIGHT, what);
    let peak = (0..times.len())
        .map(|point| bands.iter().map(|(_, values)| values[point]).sum::<u64>())
        .max()
        .unwrap_or(0);
    if bands.is_empty() || peak == 0 {
        let _ = write!(
            out,
            r##"<rect x="0" y="0" width="{WIDTH}" height="30" fill="#f4f4f4"/><text x="10" y="20" font-size="13">no memory over time to draw</text></svg>"##
        );
        return out;
    }
    let (t0, t1) = (times[0], times[times.len() - 1].max(times[0] + 1));
    let x = |t: u64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |bytes: u64| {
        HEIGHT
            - super::charts::BOTTOM
            - bytes as f64 / peak as f64 * (HEIGHT - TOP - super::charts::BOTTOM)
    };
    axes(&mut out, peak, t0, t1, report.start_ns, &x, &y);
    let mut base = vec![0u64; times.len()];
    for (index, (name, values)) in bands.iter().enumerate() {
        let top: Vec<u64> = base.iter().zip(values).map(|(b, v)| b + v).collect();
        let points: Vec<String> = times
            .iter()
            .zip(&top)
            .map(|(&t, &v)| format!("{:.1},{:.1}", x(t), y(v)))
            .chain(
                times
                    .iter()
                    .zip(&base)
                    .rev()
                    .map(|(&t, &v)| format!("{:.1},{:.1}", x(t), y(v))),
            )
            .collect();
        let colour = COLOURS[index.min(COLOURS.len() - 1)];
        let _ = write!(
            out,
            r##"<polygon points="{}" fill="{colour}" fill-opacity=".85" stroke="#222" stroke-width=".4"><title>{}: peak {}</title></polygon>"##,
            points.join(" "),
            escape(name),
            format::bytes(values.iter().copied().max().unwrap_or(0)),
        );
        base = top;
    }
    out.push_str("</svg>");
    out.push_str(r#"<div class="legend">"#);
    for (index, (name, _)) in bands.iter().enumerate() {
        let _ = write!(
            out,
            r##"<span><svg width="14" height="14" aria-hidden="true"><rect width="14" height="14" fill="{}" stroke="#333" stroke-width=".5"/></svg>{}</span>"##,
            COLOURS[index.min(COLOURS.len() - 1)],
            escape(name)
        );
    }
    out.push_str("</div>");
    out
}

/// The ranked table of every process and folded program: each cell carries the value it
/// sorts by; a row whose process has a section opens it.
pub(crate) fn ranked_table(out: &mut String, report: &Report, has_section: &dyn Fn(u32) -> bool) {
    let (_, ranking) = ranking::of(
        &report.processes,
        &report.exited,
        &report.findings,
        report.summary.span_ns,
        usize::MAX,
    );
    let _ = write!(
        out,
        r#"<p class="meta">{} ranked by steady growth, then memory held. Click a column to sort by it (again to reverse), a row to open its process. Held: allocated and still mapped, not files, thread stacks or <code>---p</code> reservations; change: allocated memory over the session.</p>"#,
        format::count(ranking.rows.len() as u64, "row"),
    );
    out.push_str(r#"<div class="scroll tall"><table id="ranking" class="sortable"><thead><tr>"#);
    for (label, kind) in [
        ("#", "num"),
        ("pid", "num"),
        ("name", "text"),
        ("cgroup", "text"),
        ("state", "text"),
        ("mapped", "num"),
        ("held", "num"),
        ("change", "num"),
        ("rate /s", "num"),
        ("maps", "num"),
        ("findings", "text"),
    ] {
        let _ = write!(out, r#"<th data-type="{kind}" tabindex="0">{label}</th>"#);
    }
    out.push_str("</tr></thead><tbody>");
    for (rank, row) in ranking.rows.iter().enumerate() {
        table_row(out, report, rank + 1, row, has_section);
    }
    out.push_str("</tbody></table></div>");
}

fn table_row(
    out: &mut String,
    report: &Report,
    rank: usize,
    row: &RankedRow,
    has_section: &dyn Fn(u32) -> bool,
) {
    let target = row.pid.filter(|&pid| has_section(pid));
    match target {
        Some(pid) => {
            let _ = write!(out, r#"<tr class="opens" data-target="pid-{pid}">"#);
        }
        None => out.push_str("<tr>"),
    }
    let state = match row.pid {
        None => "folded".to_owned(),
        Some(pid) => report
            .processes
            .iter()
            .find(|process| process.pid == pid)
            .map_or_else(String::new, |process| {
                match (process.exit_code, process.signal) {
                    (_, Some(signal)) => format!("killed {signal}"),
                    (Some(code), None) => format!("exited {code}"),
                    (None, None) => "running".to_owned(),
                }
            }),
    };
    let name = match row.pid {
        Some(_) => escape(&row.comm),
        None => format!("{} ×{}", escape(&row.comm), row.processes),
    };
    let signed = |value: i64| match value {
        0 => "0 B".to_owned(),
        v if v > 0 => format!("+{}", format::bytes(v as u64)),
        v => format!("-{}", format::bytes(v.unsigned_abs())),
    };
    let _ = write!(
        out,
        r#"<td data-value="{rank}">{rank}</td><td data-value="{}">{}</td><td>{name}</td><td title="{}">{}</td><td>{state}</td><td data-value="{}">{}</td><td data-value="{}">{}</td><td data-value="{}">{}</td><td data-value="{}">{}</td><td data-value="{}">{}</td><td>{}</td></tr>"#,
        row.pid.map_or(-1, i64::from),
        row.pid.map_or("–".to_owned(), |pid| pid.to_string()),
        escape(&row.exe),
        escape(if row.cgroup.is_empty() {
            "?"
        } else {
            &row.cgroup
        }),
        row.mapped_bytes,
        format::bytes(row.mapped_bytes),
        row.held_bytes,
        format::bytes(row.held_bytes),
        row.change_bytes,
        signed(row.change_bytes),
        row.bytes_per_s.unwrap_or(0),
        row.bytes_per_s.map_or("–".to_owned(), signed),
        row.map_count.map_or(-1, |maps| maps as i64),
        row.map_count
            .map_or("–".to_owned(), |maps| maps.to_string()),
        row.findings
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
}
