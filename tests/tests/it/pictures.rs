//! The exports of the bigalloc scenario, opened by the tools people use: `go tool pprof` on
//! --pprof, the collapsed-stack format checked against the JSON report, and the --html page
//! in headless Chromium (no console message, nothing fetched, charts on the screenshot).

use std::{collections::BTreeMap, path::Path, process::Command};

use memtrace_tests::{
    memtrace_json, processes, program, replay_json, require_root, Abi, Run, Runtime, Scratch,
};

const MIB: u64 = 1 << 20;

/// bigalloc leaking six 16 MiB blocks, with every export and a recording.
fn bigalloc_run(scratch: &Scratch) -> Run {
    let exe = program("bigalloc", Abi::X86_64, Runtime::LibcNoFramePointers);
    let path = |name: &str| scratch.file(name).to_str().unwrap().to_string();
    let run = memtrace_json(
        scratch,
        &[
            "--pprof",
            &path("profile.pb.gz"),
            "--folded",
            &path("stacks.folded"),
            "--html",
            &path("report.html"),
            "--record",
            &path("session.mtr"),
            "--",
            exe.to_str().unwrap(),
            "6",
        ],
    );
    run.assert_success();
    run
}

/// (frames root first, bytes) per line; panics on a line that is not `frame;...;frame bytes`.
fn parse_folded(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .map(|line| {
            let (stack, bytes) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in {line:?}"));
            let bytes: u64 = bytes
                .parse()
                .unwrap_or_else(|_| panic!("count is not a number in {line:?}"));
            let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            assert!(
                frames.len() >= 2 && frames.iter().all(|f| !f.is_empty()),
                "{line:?}"
            );
            assert!(bytes > 0, "{line:?}");
            (frames, bytes)
        })
        .collect()
}

#[test]
fn folded_stacks_add_up_to_the_json_report() {
    require_root();
    let scratch = Scratch::new("pictures-folded");
    let run = bigalloc_run(&scratch);
    let report = run.report();
    let text = std::fs::read_to_string(scratch.file("stacks.folded")).unwrap();
    let lines = parse_folded(&text);
    let mut by_process: BTreeMap<String, u64> = BTreeMap::new();
    for (frames, bytes) in &lines {
        *by_process.entry(frames[0].clone()).or_default() += bytes;
    }
    for process in processes(report) {
        let root = format!(
            "{}-{}",
            process["comm"].as_str().unwrap(),
            process["pid"].as_u64().unwrap()
        );
        assert_eq!(
            by_process.get(&root).copied().unwrap_or(0),
            process["unreleased"]["total_bytes"].as_u64().unwrap(),
            "{root}: folded total vs unreleased.total_bytes\n{text}"
        );
    }
    // The heaviest stack ends in the leaking function, called from process_image and main.
    let (frames, bytes) = lines.iter().max_by_key(|(_, bytes)| *bytes).unwrap();
    assert!(*bytes >= 6 * 16 * MIB, "{text}");
    let tail: Vec<&str> = frames.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(tail, ["hx_alloc_tmp", "process_image", "main"], "{text}");
    // The replay writes the same stacks.
    let replayed = scratch.file("replayed.folded");
    let (output, _) = replay_json(
        &scratch,
        &scratch.file("session.mtr"),
        &["--folded", replayed.to_str().unwrap()],
    );
    assert!(output.status.success());
    assert_eq!(std::fs::read_to_string(replayed).unwrap(), text);
}

/// `go tool pprof -top` rows: (flat bytes as printed, function).
fn pprof_top(profile: &Path, sample_index: &str) -> (String, Vec<(String, String)>) {
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(format!("-sample_index={sample_index}"))
        .arg(profile)
        .env("HOME", profile.parent().unwrap())
        .output()
        .expect("running go tool pprof (golang-go, installed by `cargo xtask setup`)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof failed: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = text
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(5..)?.join(" ")))
        })
        .collect();
    (text, rows)
}

#[test]
fn go_tool_pprof_puts_the_leaking_call_site_on_top() {
    require_root();
    let scratch = Scratch::new("pictures-pprof");
    bigalloc_run(&scratch);
    let profile = scratch.file("profile.pb.gz");
    let (text, rows) = pprof_top(&profile, "inuse_space");
    assert!(text.contains("Type: inuse_space"), "{text}");
    assert_eq!(rows[0].1, "hx_alloc_tmp", "{text}");
    assert!(rows[0].0.ends_with("MB"), "{text}");
    let flat_mb: f64 = rows[0].0.trim_end_matches("MB").parse().unwrap();
    assert!(flat_mb >= 96.0 * 1.048, "six 16 MiB blocks: {text}");
    // process_image frees an 8 MiB block per call: allocated, not held.
    let flat_of = |rows: &[(String, String)], name: &str| {
        rows.iter()
            .find(|(_, function)| function == name)
            .map(|(flat, _)| flat.clone())
    };
    assert_eq!(
        flat_of(&rows, "process_image").as_deref(),
        Some("0"),
        "{text}"
    );
    let (alloc_text, alloc_rows) = pprof_top(&profile, "alloc_space");
    let freed = flat_of(&alloc_rows, "process_image").unwrap_or_default();
    assert!(freed.ends_with("MB") && freed != "0", "{alloc_text}");
    let (objects_text, object_rows) = pprof_top(&profile, "inuse_objects");
    assert_eq!(object_rows[0].1, "hx_alloc_tmp", "{objects_text}");
}

fn chromium(user_data: &Path, args: &[&str], page: &Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Console messages (errors, blocked loads) go to stderr as INFO:CONSOLE lines.
            "--enable-logging=stderr",
            "--v=1",
        ])
        .arg(format!("--user-data-dir={}", user_data.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium (installed by `cargo xtask setup`)")
}

fn console_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// Pixels of a screenshot that are part of a chart: coloured (the palette is saturated;
/// text and backgrounds are grey), counted per band of 100 rows.
fn coloured_pixels_per_band(png_path: &Path) -> (u32, Vec<u64>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let mut bands = vec![0u64; info.height.div_ceil(100) as usize];
    for y in 0..info.height {
        let row = &buffer[y as usize * info.line_size..][..info.line_size];
        for pixel in row.chunks(channels) {
            let (max, min) = (
                pixel[..3].iter().max().unwrap(),
                pixel[..3].iter().min().unwrap(),
            );
            if max - min > 60 {
                bands[(y / 100) as usize] += 1;
            }
        }
    }
    (info.width, bands)
}

#[test]
fn html_report_opens_in_chromium_with_its_charts() {
    require_root();
    let scratch = Scratch::new("pictures-html");
    let run = bigalloc_run(&scratch);
    let page = scratch.file("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to load from anywhere (the SVG namespaces are names, not loads).
    for attribute in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!html.contains(attribute), "{attribute} in the page");
    }
    let pid = processes(run.report())[0]["pid"].as_u64().unwrap();
    assert!(html.contains(&format!("id=\"pid-{pid}\"")));
    assert!(html.contains("hx_alloc_tmp"));

    // Loaded: the page's own check ran (charts drawn, nothing fetched, no script error) and
    // the browser logged no console message at all (a blocked load would log one).
    let dom = chromium(&scratch.file("chromium-dom"), &["--dump-dom"], &page);
    let dumped = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dumped.contains("data-check=\"ok\""),
        "the page's check failed: {}",
        dumped
            .lines()
            .find(|line| line.contains("Page check"))
            .unwrap_or("(no check line)")
    );
    assert_eq!(console_lines(&dom), Vec::<String>::new());

    // Drawn: the screenshot has coloured chart pixels in several places, not a blank page.
    let screenshot = scratch.file("screenshot.png");
    let shot = chromium(
        &scratch.file("chromium-shot"),
        &[
            "--window-size=1280,2000",
            "--hide-scrollbars",
            &format!("--screenshot={}", screenshot.display()),
        ],
        &page,
    );
    assert!(
        screenshot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert_eq!(console_lines(&shot), Vec::<String>::new());
    let (width, bands) = coloured_pixels_per_band(&screenshot);
    assert_eq!(width, 1280);
    let coloured: u64 = bands.iter().sum();
    let drawn_bands = bands.iter().filter(|&&count| count > 2_000).count();
    assert!(
        coloured > 100_000 && drawn_bands >= 4,
        "charts look empty: coloured pixels per 100 rows {bands:?}"
    );

    // The replay writes a page with the same charts.
    let replayed = scratch.file("replayed.html");
    let (output, _) = replay_json(
        &scratch,
        &scratch.file("session.mtr"),
        &["--html", replayed.to_str().unwrap()],
    );
    assert!(output.status.success());
    let replayed = std::fs::read_to_string(replayed).unwrap();
    assert_eq!(
        replayed.matches("class=\"chart").count(),
        html.matches("class=\"chart").count()
    );
    assert!(replayed.contains("hx_alloc_tmp"));
}
