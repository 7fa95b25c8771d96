//! `--html`: one self-contained page per session (inline CSS, SVG and a few lines of script;
//! no fonts, images or scripts from elsewhere, and a Content-Security-Policy that forbids
//! the browser to fetch anything). It opens on the session: its totals, mapped and allocated
//! bytes over time stacked by program, the ranked table of every process and folded program
//! (sortable), and the findings. A process's charts show when its row is picked (one at a
//! time): mapped bytes over time by kind, the groups that grew most, the address space to
//! scale, an icicle graph of the unreleased bytes by call stack, the execs and its findings.
//! Charts are drawn for the processes of the summary's table and those with findings
//! (`--all`: every process); the others get their facts and groups, so a server's page stays
//! small.

mod address_map;
mod charts;
mod flame;
mod overview;
mod palette;

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::report::export::collapsed;
use crate::report::export::held;
use crate::report::format;
use crate::report::schema::{Finding, ProcessReport, Report};

/// What the page shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HtmlOptions {
    /// Charts for every process (`--all`), not only those of the table and with findings.
    pub all: bool,
}

/// The page, with charts for the processes of the summary's table and those with findings.
pub fn render(report: &Report) -> String {
    render_with(report, &HtmlOptions::default())
}

/// The page.
pub fn render_with(report: &Report, options: &HtmlOptions) -> String {
    let collapsed = collapsed::lines(report);
    let charted: HashSet<u32> = report
        .ranking
        .rows
        .iter()
        .filter_map(|row| row.pid)
        .chain(report.findings.iter().map(|finding| finding.pid))
        .collect();
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(HEAD);
    out.push_str(&palette::defs());
    let summary = &report.summary;
    let _ = write!(
        out,
        r#"<header><h1>memtrace report</h1><p>{} · {:.1} s · {} events{} · {} · {}</p></header>"#,
        report.source.as_str(),
        summary.span_ns as f64 / 1e9,
        report.events,
        if report.lost_events > 0 {
            format!(" · <strong>{} lost</strong>", report.lost_events)
        } else {
            String::new()
        },
        format::count_of(
            report.processes.len() as u64 + summary.exited.folded_processes,
            "process",
            "processes"
        ),
        format::count(report.findings.len() as u64, "finding"),
    );
    let live = &summary.live;
    let exited = &summary.exited;
    let live_line = if live.processes == 0 {
        "No process live at the end".to_owned()
    } else {
        format!(
            "Live: {} mapping {}, holding {}",
            format::count_of(live.processes, "process", "processes"),
            format::bytes(live.mapped_bytes),
            format::bytes(live.held_bytes),
        )
    };
    let _ = write!(
        out,
        r#"<section class="card overview" id="overview"><h2>Session</h2><p class="meta">{live_line}. Exited: {}{}, holding {} at their exits.</p><div class="pair">"#,
        format::count_of(
            exited.processes + exited.folded_processes,
            "process",
            "processes"
        ),
        match exited.folded_processes {
            0 => String::new(),
            folded => format!(" ({folded} folded by program)"),
        },
        format::bytes(exited.held_bytes),
    );
    if overview::drawable(report) {
        for measure in [overview::Measure::Mapped, overview::Measure::Allocated] {
            let (caption, chart) = overview::stacked_by_program(report, measure);
            let _ = write!(
                out,
                "<figure><figcaption>{caption}</figcaption>{chart}</figure>"
            );
        }
    } else {
        let _ = write!(
            out,
            r#"<p class="none">The session lasted {:.3} s: too short to draw over time. Each process's charts show what it created when.</p>"#,
            summary.span_ns as f64 / 1e9
        );
    }
    out.push_str("</div>");
    let sectioned: HashSet<u32> = report.processes.iter().map(|process| process.pid).collect();
    overview::ranked_table(&mut out, report, &|pid| sectioned.contains(&pid));
    out.push_str("</section>");
    if !report.findings.is_empty() {
        out.push_str(r#"<section class="card"><h2>Findings</h2>"#);
        findings(&mut out, report.findings.iter(), true);
        out.push_str("</section>");
    }
    for process in &report.processes {
        if options.all || charted.contains(&process.pid) {
            let prefix = format!("{};", held::process_owner(process).label);
            let lines: Vec<&str> = collapsed
                .iter()
                .filter(|line| line.starts_with(&prefix))
                .map(String::as_str)
                .collect();
            process_section(&mut out, report, process, &lines);
        } else {
            brief_section(&mut out, report, process);
        }
    }
    out.push_str(r#"<footer><p id="check">The page's check did not run.</p></footer>"#);
    out.push_str(SCRIPT);
    out.push_str("</body></html>\n");
    out
}

/// The opening of a process's section (hidden until its row is picked): who, how it ended,
/// what it maps and holds, and its findings.
fn section_head(out: &mut String, report: &Report, process: &ProcessReport) {
    let status = match (process.alive, process.exit_code, process.signal) {
        (true, _, _) => "alive".to_string(),
        (false, Some(code), _) => format!("exited {code}"),
        (false, None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "exited".to_string(),
    };
    let _ = write!(
        out,
        r#"<section class="card process" id="pid-{}" hidden><h2>pid {} <span class="comm">{}</span></h2><p class="meta">{} · {} · {} · parent {} · mapped {} in {} mappings · unreleased {} in {}</p>"#,
        process.pid,
        process.pid,
        escape(&process.comm),
        escape(&process.exe),
        process.abi,
        status,
        process.ppid,
        format::bytes(crate::report::findings::mapped_bytes(process)),
        process.map_count,
        format::bytes(process.unreleased.total_bytes),
        format::count(process.unreleased.total_regions, "region"),
    );
    let own: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|finding| finding.pid == process.pid)
        .collect();
    if !own.is_empty() {
        findings(out, own.into_iter(), false);
    }
}

/// A process without charts: its facts and the groups it holds.
fn brief_section(out: &mut String, report: &Report, process: &ProcessReport) {
    section_head(out, report, process);
    let groups: Vec<_> = process
        .unreleased
        .groups
        .iter()
        .chain(&process.held_since_attach)
        .filter(|group| !group.is_loaded())
        .take(10)
        .collect();
    if groups.is_empty() {
        out.push_str(r#"<p class="none">Nothing allocated and still held.</p>"#);
    } else {
        out.push_str(r#"<div class="scroll"><table><thead><tr><th>kind</th><th>name</th><th>permissions</th><th>regions</th><th>bytes</th></tr></thead><tbody>"#);
        for group in groups {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                group.kind,
                escape(if group.name.is_empty() {
                    "[anon]"
                } else {
                    &group.name
                }),
                group.perms,
                group.count,
                format::bytes(group.bytes),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out.push_str(r#"<p class="none">Charts are drawn for the processes of the summary's table and those with findings; write the page with <code>--all</code> for every process's.</p>"#);
    out.push_str("</section>");
}

fn process_section(
    out: &mut String,
    report: &Report,
    process: &ProcessReport,
    flame_lines: &[&str],
) {
    section_head(out, report, process);
    let (caption, timeline) = charts::timeline(process, report.start_ns);
    let _ = write!(
        out,
        r#"<div class="pair"><figure><figcaption>{caption}</figcaption>{timeline}"#
    );
    out.push_str(r#"</figure><figure><figcaption>Unreleased groups that grew most (kind, name, permissions)</figcaption>"#);
    out.push_str(&charts::grown_groups(process, report.start_ns));
    out.push_str("</figure></div>");
    out.push_str(r#"<figure><figcaption>Address space at the end, to scale by kind. Gaps over 1 GiB are cut (//, with their size); each stretch has its own linear scale. Hover for details.</figcaption>"#);
    out.push_str(&address_map::render(process));
    out.push_str("</figure>");
    out.push_str(r#"<figure><figcaption>Unreleased bytes by call stack (icicle: the process on top, callers above callees; width is bytes). Hover for details.</figcaption>"#);
    match flame::render(flame_lines) {
        Some(svg) => out.push_str(&svg),
        None => out.push_str(r#"<p class="none">No unreleased bytes.</p>"#),
    }
    out.push_str("</figure>");
    execs(out, report, process);
    out.push_str("</section>");
}

/// `linked`: each opens its process's section.
fn findings<'f>(out: &mut String, findings: impl Iterator<Item = &'f Finding>, linked: bool) {
    out.push_str(r#"<ul class="findings">"#);
    for finding in findings {
        let _ = write!(
            out,
            r#"<li><span class="tag">{}</span> {}{}</li>"#,
            finding.kind.as_str(),
            escape(&finding.message),
            if linked {
                format!(
                    r##" <a href="#pid-{}">pid {}</a>"##,
                    finding.pid, finding.pid
                )
            } else {
                String::new()
            },
        );
    }
    out.push_str("</ul>");
}

fn execs(out: &mut String, report: &Report, process: &ProcessReport) {
    if process.execs.is_empty() {
        return;
    }
    out.push_str(r#"<h3>Execs</h3><div class="scroll"><table><thead><tr><th>when</th><th>file</th><th>ABI</th><th>personality</th><th>exe</th><th>ld.so</th><th>lowest library</th><th>brk start</th><th>stack</th><th>lowest mapping above brk</th></tr></thead><tbody>"#);
    let hex_or_dash = |value: Option<u64>| value.map_or("–".to_string(), format::hex);
    for exec in &process.execs {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{:#x}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}–{}</td><td>{}</td></tr>",
            format::since(report.start_ns, exec.time_ns),
            escape(&exec.filename),
            exec.from_abi,
            exec.to_abi,
            exec.personality,
            format::hex(exec.exe_base),
            hex_or_dash((exec.interp_base != 0).then_some(exec.interp_base)),
            hex_or_dash(exec.lowest_library),
            format::hex(exec.brk_start),
            format::hex(exec.stack_start),
            format::hex(exec.stack_end),
            exec.above_brk.as_ref().map_or("–".to_string(), |above| format!(
                "{} {} {}",
                format::hex(above.start),
                above.perms,
                escape(&above.name)
            )),
        );
    }
    out.push_str("</tbody></table></div>");
}

/// Text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// At most `max` characters, the end kept (paths say most at their end), `…` marking a cut.
pub(crate) fn short(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let tail: String = text.chars().skip(count - (max - 1)).collect();
    format!("…{tail}")
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>memtrace report</title>
<script>
// Problems met while the page loads, for the check at its end.
var pageProblems = [];
addEventListener("error", function (event) { pageProblems.push("error: " + event.message); });
addEventListener("securitypolicyviolation", function (event) { pageProblems.push("blocked: " + event.blockedURI); });
</script>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;background:#f6f6f3;margin:0 auto;max-width:1280px;padding:12px 20px}
h1{font-size:22px;margin:4px 0}h2{font-size:18px;margin:0 0 4px}h3{font-size:15px;margin:14px 0 4px}
header p,.meta{color:#444;margin:2px 0 8px}.comm{font-weight:400;color:#333}
nav ul{list-style:none;padding:0;margin:0 0 10px;display:flex;flex-wrap:wrap;gap:6px 18px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:12px 0}
figure{margin:10px 0}figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
svg.chart{width:100%;height:auto;display:block}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:2px}.legend span{display:inline-flex;align-items:center;gap:4px}
.findings{margin:6px 0;padding-left:18px}.findings li{margin:3px 0}
.tag{font:12px ui-monospace,monospace;background:#222;color:#fff;border-radius:3px;padding:0 5px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12px}th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:left;white-space:nowrap}
td{font-family:ui-monospace,monospace}.none{color:#555}footer{color:#555;font-size:12px}
.tall{max-height:560px;overflow-y:auto}table.sortable th{cursor:pointer;position:sticky;top:0;background:#fff;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}table.sortable th[aria-sort=descending]::after{content:" ▼"}
tr.opens{cursor:pointer}tr.opens:hover{background:#eef4fb}tr.selected{background:#dbe9f8}
</style></head><body>
"#;

/// The page's script: sorting the table by a column, opening a process from its row (or from
/// a link to `#pid-N`), and the check the page makes of itself once loaded, and again after
/// each change (tests read the verdict from the DOM): every chart shown has shapes and a size
/// on screen, no script failed, and nothing was fetched or blocked (the policy forbids
/// fetching; this shows nothing tried).
const SCRIPT: &str = r##"<script>
(function () {
  function check() {
    var charts = Array.prototype.filter.call(document.querySelectorAll("svg.chart"), function (chart) {
      return !chart.closest("[hidden]");
    });
    var drawn = 0;
    charts.forEach(function (chart) {
      var box = chart.getBoundingClientRect();
      if (box.width > 0 && box.height > 0 && chart.querySelector("rect,polygon,path,line")) drawn++;
    });
    var fetched = performance.getEntriesByType("resource").length;
    var ok = charts.length > 0 && drawn === charts.length && fetched === 0 && pageProblems.length === 0;
    document.documentElement.setAttribute("data-check", ok ? "ok" : "failed");
    document.getElementById("check").textContent = "Page check: " + drawn + " of " + charts.length +
      " charts drawn, " + fetched + " resources fetched, " + pageProblems.length + " problems" +
      (pageProblems.length ? " (" + pageProblems.join("; ") + ")" : "") + ".";
    return ok;
  }
  window.memtraceCheck = check;
  // One process shown at a time: the one picked, its row marked.
  function open(id) {
    var section = document.getElementById(id);
    if (!section || !section.classList.contains("process")) return false;
    document.querySelectorAll("section.process").forEach(function (other) {
      other.hidden = other !== section;
    });
    document.querySelectorAll("tr.opens").forEach(function (row) {
      row.classList.toggle("selected", row.getAttribute("data-target") === id);
    });
    document.documentElement.setAttribute("data-open", id);
    check();
    return true;
  }
  function openFromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (open(id)) document.getElementById(id).scrollIntoView();
  }
  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var value = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    return numeric ? Number(value) : value.toLowerCase();
  }
  function sortBy(header) {
    var table = header.closest("table");
    var index = Array.prototype.indexOf.call(header.parentNode.children, header);
    var numeric = header.getAttribute("data-type") === "num";
    // Numbers largest first, names in alphabetical order; a second click reverses.
    var first = numeric ? "descending" : "ascending";
    var other = first === "descending" ? "ascending" : "descending";
    var order = header.getAttribute("aria-sort") === first ? other : first;
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", order);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = order === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      var byValue = x < y ? -1 : x > y ? 1 : 0;
      return sign * byValue || cellValue(a, 0, true) - cellValue(b, 0, true);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable th").forEach(function (header) {
    header.addEventListener("click", function () { sortBy(header); });
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(header); }
    });
  });
  document.querySelectorAll("tr.opens").forEach(function (row) {
    row.addEventListener("click", function () {
      var id = row.getAttribute("data-target");
      if (open(id)) history.replaceState(null, "", "#" + id);
    });
  });
  addEventListener("hashchange", openFromHash);
  addEventListener("load", function () {
    // The process a link names, else the first of the ranking.
    if (!open(decodeURIComponent(location.hash.slice(1)))) {
      var first = document.querySelector("tr.opens");
      if (first) open(first.getAttribute("data-target"));
    }
    check();
  });
})();
</script>
"##;
