//! The address space drawn to scale by kind. A 47-bit address space is almost all empty: the
//! map cuts every gap longer than [`CUT_GAP`] (drawn as a break, labelled with its size) and
//! draws each occupied stretch to its own linear scale, its width growing with the square
//! root of its size so that a small stretch (the executable, the stack) stays visible next to
//! a large one. Within a stretch distances are true, so a heap pressed against the mapping
//! above it, or libraries placed below the executable, show at once.

use std::fmt::Write as _;

use super::{escape, palette};
use crate::report::format;
use crate::report::schema::{LayoutEntry, ProcessReport};

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 150.0;
const BAR_TOP: f64 = 34.0;
const BAR_HEIGHT: f64 = 44.0;
/// Room between two stretches for the break mark.
const BREAK: f64 = 60.0;
/// The narrowest a stretch is drawn.
const MIN_STRETCH: f64 = 30.0;
/// Gaps longer than this are cut out.
const CUT_GAP: u64 = 1 << 30;

/// Consecutive regions with no gap longer than [`CUT_GAP`] between them, and where they are
/// drawn.
struct Stretch {
    start: u64,
    end: u64,
    x: f64,
    width: f64,
}

impl Stretch {
    fn x_of(&self, address: u64) -> f64 {
        let clamped = address.clamp(self.start, self.end);
        self.x + (clamped - self.start) as f64 / (self.end - self.start).max(1) as f64 * self.width
    }
}

pub(crate) fn render(process: &ProcessReport) -> String {
    let mut out = format!(
        r#"<svg class="chart address-map" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Address space of pid {}, drawn to scale by kind, long gaps cut" font-family="system-ui, sans-serif">"#,
        process.pid
    );
    let stretches = stretches(&process.layout);
    if stretches.is_empty() {
        out.push_str(r#"<text x="10" y="20" font-size="13">no layout known</text></svg>"#);
        return out;
    }
    for (index, stretch) in stretches.iter().enumerate() {
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{BAR_TOP}" width="{:.1}" height="{BAR_HEIGHT}" fill="#f2f2f2" stroke="#999" stroke-width=".5"/>"##,
            stretch.x, stretch.width
        );
        if stretch.width >= 70.0 || index == 0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" font-size="10" font-family="ui-monospace, monospace">{}</text>"#,
                stretch.x,
                BAR_TOP - 4.0,
                format::hex(stretch.start)
            );
        }
        if let Some(next) = stretches.get(index + 1) {
            let mid = stretch.x + stretch.width + BREAK / 2.0;
            let _ = write!(
                out,
                r##"<path d="M{:.1} {} l6 -10 M{:.1} {} l6 -10" stroke="#333" stroke-width="1.5"/><text x="{mid:.1}" y="{}" font-size="10" text-anchor="middle"><title>gap cut from the drawing</title>{}</text>"##,
                mid - 6.0,
                BAR_TOP + BAR_HEIGHT / 2.0 + 5.0,
                mid,
                BAR_TOP + BAR_HEIGHT / 2.0 + 5.0,
                BAR_TOP + BAR_HEIGHT - 6.0,
                format::bytes(next.start - stretch.end)
            );
        }
    }
    // Regions narrower than a pixel next to others of their kind are drawn as one (a process
    // of thousands of small mappings would otherwise cost a rect and a title each, none of
    // them visible): the run's title counts them.
    let mut run: Option<Run<'_>> = None;
    for entry in &process.layout {
        let Some(stretch) = stretches
            .iter()
            .find(|s| s.start <= entry.start && entry.end <= s.end)
        else {
            continue;
        };
        let x = stretch.x_of(entry.start);
        let end_x = stretch.x_of(entry.end);
        let thin = end_x - x < THIN;
        if let Some(current) = &mut run {
            if thin && current.kind == entry.kind && x - current.end_x < THIN {
                current.end_x = end_x;
                current.end = entry.end;
                current.count += 1;
                current.bytes += entry.end - entry.start;
                continue;
            }
        }
        if let Some(done) = run.take() {
            done.draw(&mut out);
        }
        if thin {
            run = Some(Run {
                kind: entry.kind,
                x,
                end_x,
                start: entry.start,
                end: entry.end,
                count: 1,
                bytes: entry.end - entry.start,
                first: entry,
            });
            continue;
        }
        draw_entry(&mut out, entry, x, end_x);
    }
    if let Some(done) = run.take() {
        done.draw(&mut out);
    }
    markers(&mut out, process, &stretches);
    out.push_str("</svg>");
    let mut kinds: Vec<&str> = palette::KINDS
        .into_iter()
        .filter(|kind| process.layout.iter().any(|entry| entry.kind == *kind))
        .collect();
    kinds.dedup();
    out.push_str(&palette::legend(&kinds));
    out
}

/// Narrower than this (in the drawing's units, about a pixel) a region is merged into a run.
const THIN: f64 = 1.0;

/// Thin regions of one kind next to each other, drawn as one rect.
struct Run<'a> {
    kind: &'a str,
    x: f64,
    end_x: f64,
    start: u64,
    end: u64,
    count: u64,
    bytes: u64,
    first: &'a LayoutEntry,
}

impl Run<'_> {
    fn draw(&self, out: &mut String) {
        if self.count == 1 {
            draw_entry(out, self.first, self.x, self.end_x);
            return;
        }
        let width = (self.end_x - self.x).max(1.0);
        let _ = write!(
            out,
            r##"<rect x="{:.2}" y="{BAR_TOP}" width="{width:.2}" height="{BAR_HEIGHT}" fill="{}" stroke="#222" stroke-width=".3"><title>{}–{} {} regions of {}, {} in all</title></rect>"##,
            self.x,
            palette::fill(self.kind),
            format::hex(self.start),
            format::hex(self.end),
            self.count,
            self.kind,
            format::bytes(self.bytes),
        );
    }
}

fn draw_entry(out: &mut String, entry: &LayoutEntry, x: f64, end_x: f64) {
    let width = (end_x - x).max(1.0);
    let name = if entry.name.is_empty() {
        "[anon]"
    } else {
        &entry.name
    };
    let _ = write!(
        out,
        r##"<rect x="{x:.2}" y="{BAR_TOP}" width="{width:.2}" height="{BAR_HEIGHT}" fill="{}" stroke="#222" stroke-width=".3"><title>{}–{} {} {} {} {}</title></rect>"##,
        palette::fill(entry.kind),
        format::hex(entry.start),
        format::hex(entry.end),
        entry.perms,
        entry.kind,
        format::bytes(entry.end - entry.start),
        escape(name)
    );
}

fn stretches(layout: &[LayoutEntry]) -> Vec<Stretch> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for entry in layout {
        match spans.last_mut() {
            Some(last) if entry.start.saturating_sub(last.1) <= CUT_GAP => {
                last.1 = last.1.max(entry.end)
            }
            _ => spans.push((entry.start, entry.end)),
        }
    }
    let room = WIDTH - 4.0 - BREAK * spans.len().saturating_sub(1) as f64;
    let weights: Vec<f64> = spans
        .iter()
        .map(|(start, end)| ((end - start) as f64).sqrt())
        .collect();
    let total: f64 = weights.iter().sum::<f64>().max(1.0);
    let mut widths: Vec<f64> = weights
        .iter()
        .map(|w| (w / total * room).max(MIN_STRETCH))
        .collect();
    // The minimum widths took room from the others: scale back to fit.
    let drawn: f64 = widths.iter().sum();
    if drawn > room {
        let scale = room / drawn;
        widths.iter_mut().for_each(|w| *w *= scale);
    }
    let mut x = 2.0;
    spans
        .into_iter()
        .zip(widths)
        .map(|((start, end), width)| {
            let stretch = Stretch {
                start,
                end,
                x,
                width,
            };
            x += width + BREAK;
            stretch
        })
        .collect()
}

/// Ticks under the bar for the places a layout is judged by: the executable, the loader, the
/// lowest library, the heap (start, break, what bounds it) and the stack.
fn markers(out: &mut String, process: &ProcessReport, stretches: &[Stretch]) {
    let mut points: Vec<(u64, String)> = Vec::new();
    if let Some(exec) = process.execs.last() {
        points.push((exec.exe_base, "exe".into()));
        if exec.interp_base != 0 {
            points.push((exec.interp_base, "ld.so".into()));
        }
        if let Some(lowest) = exec.lowest_library {
            points.push((lowest, "libs".into()));
        }
        points.push((exec.stack_start, "stack".into()));
    }
    if let Some(start) = process.brk.start {
        points.push((start, "brk start".into()));
        if let Some(end) = process.brk.end.filter(|&end| end != start) {
            points.push((end, "brk".into()));
        }
        if let Some(bound) = &process.brk.bounded_by {
            let left = process
                .brk
                .room_left
                .map(|left| format!(" ({} left)", format::bytes(left)))
                .unwrap_or_default();
            points.push((bound.start, format!("heap bound{left}")));
        }
    }
    points.sort_by_key(|(address, _)| *address);
    // Each label takes the first of three rows where it overlaps no label placed before it.
    let mut row_ends = [f64::MIN; 3];
    for (address, label) in &points {
        let Some(stretch) = stretches.iter().min_by_key(|s| distance(s, *address)) else {
            continue;
        };
        let x = stretch.x_of(*address);
        let width = label.chars().count() as f64 * 6.2;
        let left = (x - width / 2.0).clamp(2.0, WIDTH - width - 2.0);
        let row = row_ends
            .iter()
            .position(|&end| end + 6.0 <= left)
            .unwrap_or(2);
        row_ends[row] = left + width;
        let label_y = BAR_TOP + BAR_HEIGHT + 16.0 + row as f64 * 14.0;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{:.1}" stroke="#000" stroke-width="1.2"/><text x="{left:.1}" y="{label_y:.1}" font-size="11"><title>{}</title>{}</text>"##,
            BAR_TOP - 2.0,
            label_y - 10.0,
            format::hex(*address),
            escape(label)
        );
    }
}

fn distance(stretch: &Stretch, address: u64) -> u64 {
    if address < stretch.start {
        stretch.start - address
    } else {
        address.saturating_sub(stretch.end)
    }
}
