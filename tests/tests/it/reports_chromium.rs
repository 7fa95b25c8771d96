//! Chromium loading a page, traced with `--pid BROWSER --follow` (#24): its processes share
//! memory through memfds mapped rw-s and r--s with their fds closed, and its renderers keep
//! V8's large reservations. That is how it works: no live process has an unreleased-*
//! finding.

use std::time::Duration;

use memtrace_tests::{devtools::Browser, require_root, Scratch, Tracer};
use serde_json::Value;

/// A page that does a little work: objects, strings and a canvas.
const PAGE: &str = r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>work</title></head>
<body><h1>work</h1><canvas id="c" width="800" height="600"></canvas><script>
var kept = [];
for (var i = 0; i < 300000; i++) kept.push({ i: i, s: "item " + i });
var context = document.getElementById("c").getContext("2d");
for (var j = 0; j < 2000; j++) { context.fillStyle = "hsl(" + j % 360 + ",80%,50%)"; context.fillRect(j % 800, j % 600, 20, 20); }
document.title = "done " + kept.length;
</script></body></html>"#;

#[test]
fn chromium_under_follow_has_no_finding_for_its_live_processes() {
    require_root();
    let scratch = Scratch::new("reports-chromium");
    let page = scratch.file("page.html");
    std::fs::write(&page, PAGE).unwrap();
    let report_path = scratch.file("report.json");
    let mut browser = Browser::launch(&scratch.file("profile"));
    let tracer = Tracer::attach(&[
        "--pid",
        &browser.pid().to_string(),
        "--follow",
        "--duration",
        "6",
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    browser.open(&format!("file://{}", page.display()));
    browser.wait_for("document.title.startsWith('done')", Duration::from_secs(20));
    let (status, stderr) = tracer.wait(Duration::from_secs(60));
    assert!(status.success(), "memtrace failed: {stderr}");
    drop(browser);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let processes = report["processes"].as_array().unwrap();
    let alive: Vec<&Value> = processes.iter().filter(|p| p["alive"] == true).collect();
    assert!(
        alive.len() >= 3,
        "browser, zygote, renderer…: {}",
        alive.len()
    );

    // The pattern that used to raise findings is there: memfds whose fds were closed, mapped
    // by live processes read-write and read-only.
    let closed_memfd_views: Vec<&Value> = alive
        .iter()
        .flat_map(|process| process["unreleased"]["groups"].as_array().unwrap())
        .filter(|group| group["kind"] == "memfd")
        .flat_map(|group| group["regions"].as_array().unwrap())
        .filter(|region| region["memfd_fd_closed"] == true)
        .collect();
    assert!(
        !closed_memfd_views.is_empty(),
        "no shared memory with closed fds in live processes: the test shows nothing"
    );
    assert!(closed_memfd_views
        .iter()
        .all(|region| !region["perms"].as_str().unwrap().contains('x')));

    let alive_pids: Vec<&Value> = alive.iter().map(|process| &process["pid"]).collect();
    for finding in report["findings"].as_array().unwrap() {
        let kind = finding["kind"].as_str().unwrap();
        assert!(
            !(kind.starts_with("unreleased-") && alive_pids.contains(&&finding["pid"])),
            "a live process's memory is no finding: {finding:#}"
        );
    }
    // The ranking still names where the memory is.
    assert_eq!(
        report["ranking"]["total_rows"].as_u64().unwrap() as usize,
        processes.len()
    );
}
