//! The rebuilt address spaces and what memtrace finds in them: the three incidents of
//! shared/docs/scenarios.md, and agreement with the kernel's own /proc/PID/maps.

use memtrace_tests::{
    memtrace_json, oracle, processes, processes_running, program, require_root, Abi, Runtime,
    Scratch,
};
use rstest::rstest;
use serde_json::Value;

const MIB: u64 = 1 << 20;

#[track_caller]
fn assert_layout_agrees(process: &Value, maps: &str) {
    let agreement = oracle::agreement(process, maps);
    assert!(
        agreement.ratio() >= 0.99,
        "pid {} ({}): rebuilt layout agrees with /proc/PID/maps for {:.3}% of mapped bytes:\n{}",
        process["pid"],
        process["exe"],
        agreement.ratio() * 100.0,
        agreement.differences
    );
}

#[track_caller]
fn only_process<'a>(report: &'a Value, exe_suffix: &str) -> &'a Value {
    let found = processes_running(report, exe_suffix);
    assert_eq!(
        found.len(),
        1,
        "one process running {exe_suffix}: {report:#}"
    );
    found[0]
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn doublemapper(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("doublemapper-{}", abi.name()));
    let maps = scratch.file("maps");
    let exe = program("doublemapper", abi, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &["--", exe.to_str().unwrap(), "8", maps.to_str().unwrap()],
    );
    run.assert_success();
    let report = run.report();
    let process = &processes(report)[0];
    assert_layout_agrees(process, &std::fs::read_to_string(&maps).unwrap());

    let found = findings(report, "unreleased-memfd");
    assert_eq!(found.len(), 1, "{report:#}");
    let finding = found[0];
    assert_eq!(finding["name"], "memfd:doublemapper");
    assert_eq!(finding["regions"], 16);
    assert_eq!(finding["bytes"], 64 * MIB);
    assert!(finding["message"]
        .as_str()
        .unwrap()
        .contains("DOTNET_EnableWriteXorExecute=0"));

    let groups = process["unreleased"]["groups"].as_array().unwrap();
    let memfd_groups: Vec<_> = groups.iter().filter(|g| g["kind"] == "memfd").collect();
    assert_eq!(memfd_groups.len(), 2, "rw-s and r-xs views: {groups:#?}");
    for group in &memfd_groups {
        assert_eq!(group["name"], "memfd:doublemapper");
        assert_eq!(group["count"], 8);
        assert_eq!(group["bytes"], 32 * MIB);
        for region in group["regions"].as_array().unwrap() {
            assert_eq!(region["memfd_fd_closed"], true);
            assert_eq!(region["syscall"], "mmap");
        }
    }
    assert!(
        groups.iter().all(|g| g["name"] != "memfd:released"),
        "the properly released memfd is not reported"
    );
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn large_blocks(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("bigalloc-{}", abi.name()));
    let maps = scratch.file("maps");
    let exe = program("bigalloc", abi, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &["--", exe.to_str().unwrap(), "6", maps.to_str().unwrap()],
    );
    run.assert_success();
    let report = run.report();
    let process = &processes(report)[0];
    assert_layout_agrees(process, &std::fs::read_to_string(&maps).unwrap());

    // glibc serves each 16 MiB malloc with one mapping of 16 MiB plus its header page.
    let anon: Vec<&Value> = process["unreleased"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == "anon")
        .flat_map(|g| g["regions"].as_array().unwrap())
        .filter(|r| r["len"].as_u64().unwrap() >= MIB)
        .collect();
    assert_eq!(
        anon.len(),
        6,
        "only the six leaked 16 MiB blocks: {anon:#?}"
    );
    for region in anon {
        let len = region["len"].as_u64().unwrap();
        assert!((16 * MIB..16 * MIB + 64 * 1024).contains(&len), "{region}");
    }
    let found = findings(report, "unreleased-anon");
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["regions"], 6);
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn starved_heap(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("brk-{}", abi.name()));
    let maps = scratch.file("maps");
    let blocker = scratch.file("blocker.dat");
    let exe = program("brk_starve", abi, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &[
            "--",
            exe.to_str().unwrap(),
            blocker.to_str().unwrap(),
            "20",
            maps.to_str().unwrap(),
        ],
    );
    run.assert_success();
    let report = run.report();
    let process = &processes(report)[0];
    assert_layout_agrees(process, &std::fs::read_to_string(&maps).unwrap());

    let brk = &process["brk"];
    assert_eq!(brk["failed"].as_array().unwrap().len(), 5, "{brk:#}");
    for failure in brk["failed"].as_array().unwrap() {
        assert_eq!(failure["asked_bytes"], 64 * 1024);
    }
    assert_eq!(brk["room_total"], MIB);
    assert_eq!(brk["bounded_by"]["name"], blocker.to_str().unwrap());
    let found = findings(report, "brk-exhausted");
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["failed_calls"], 5);
    assert!(found[0]["message"]
        .as_str()
        .unwrap()
        .contains("blocker.dat"));
}

/// A 32-bit parent starts a 64-bit child. On this kernel the child gets a proper 64-bit
/// layout, so there is no finding; both layouts must be right.
#[test]
fn exec_from_32_to_64_bit_has_both_layouts_right() {
    require_root();
    let scratch = Scratch::new("exec-layouts");
    let parent = program("exec_child", Abi::I386, Runtime::Libc);
    let child = program("doublemapper", Abi::X86_64, Runtime::Libc);
    let maps = scratch.file("maps");
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--",
            parent.to_str().unwrap(),
            child.to_str().unwrap(),
            "1",
            maps.to_str().unwrap(),
        ],
    );
    run.assert_success();
    let report = run.report();
    let child_entry = only_process(report, "doublemapper-64");
    let exec = &child_entry["execs"][0];
    assert_eq!(
        (&exec["from_abi"], &exec["to_abi"]),
        (&"i386".into(), &"x86_64".into())
    );
    assert!(exec["interp_base"].as_u64().unwrap() > exec["exe_base"].as_u64().unwrap());
    assert_layout_agrees(child_entry, &std::fs::read_to_string(&maps).unwrap());
    let parent_entry = only_process(report, "exec_child-32");
    assert_eq!(parent_entry["abi"], "i386");
    let parent_execs = parent_entry["execs"].as_array().unwrap();
    assert!(parent_execs[0]["interp_base"].as_u64().unwrap() < 1 << 32);
    assert!(findings(report, "abi-exec-layout").is_empty(), "{report:#}");
}

/// The legacy (bottom-up) layout a 32-bit parent hands down through its personality makes
/// the 64-bit child's libraries land below its executable: incident 3's shape.
#[test]
fn a_32_bit_layout_inherited_by_a_64_bit_child_is_found() {
    require_root();
    let scratch = Scratch::new("abi-layout");
    let parent = program("exec_child", Abi::I386, Runtime::Libc);
    let child = program("doublemapper", Abi::X86_64, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--",
            "setarch",
            "x86_64",
            "--addr-compat-layout",
            parent.to_str().unwrap(),
            child.to_str().unwrap(),
            "1",
        ],
    );
    run.assert_success();
    let report = run.report();
    let child_entry = only_process(report, "doublemapper-64");
    let found = findings(report, "abi-exec-layout");
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["pid"], child_entry["pid"]);
    assert_eq!(found[0]["from_abi"], "i386");
    assert_eq!(found[0]["to_abi"], "x86_64");
    assert!(found[0]["lowest_library"].as_u64().unwrap() < found[0]["exe_base"].as_u64().unwrap());
}

/// Programs no one here wrote, each copying its own maps as its last act (a program that
/// frees memory after reading, like cat, would compare an older layout with the one at exit).
#[test]
fn real_programs_layouts_agree() {
    require_root();
    let scratch = Scratch::new("real-layouts");
    let maps = scratch.file("bash.maps");
    let script = format!(
        "IFS= read -r -d '' maps < /proc/self/maps; printf '%s' \"$maps\" > {:?}; exit 0",
        maps.to_str().unwrap()
    );
    let run = memtrace_json(&scratch, &["--", "bash", "-c", &script]);
    run.assert_success();
    assert_layout_agrees(
        &processes(run.report())[0],
        &std::fs::read_to_string(&maps).unwrap(),
    );

    let maps = scratch.file("dd.maps");
    let output = format!("of={}", maps.to_str().unwrap());
    let run = memtrace_json(
        &scratch,
        &["--", "dd", "if=/proc/self/maps", &output, "status=none"],
    );
    run.assert_success();
    assert_layout_agrees(
        &processes(run.report())[0],
        &std::fs::read_to_string(&maps).unwrap(),
    );

    let maps = scratch.file("python.maps");
    let script = format!(
        "import os\ndata = open('/proc/self/maps').read()\nfd = os.open({:?}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, data.encode())\nos._exit(0)\n",
        maps.to_str().unwrap()
    );
    let run = memtrace_json(&scratch, &["--", "python3", "-c", &script]);
    run.assert_success();
    assert_layout_agrees(
        &processes(run.report())[0],
        &std::fs::read_to_string(&maps).unwrap(),
    );
}
