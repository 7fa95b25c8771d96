//! Every way a mapping is made besides mmap (#23): SysV shared memory (shmat/shmdt, and ia32's
//! ipc(2)), AIO rings (io_setup/io_destroy), protection keys (pkey_mprotect), sealing (mseal)
//! and remap_file_pages, in both ABIs: the layout at exit against the kernel's own
//! /proc/PID/maps, each count against strace's, and the replay of the recording against the
//! live report.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{
    calls, memtrace_bin, memtrace_json, oracle, process, program, replay_json, require_root, Abi,
    Runtime, Scratch, REPORTED_SYSCALLS,
};
use rstest::rstest;
use serde_json::Value;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// The regions of a process entry named `name`.
fn regions_named<'a>(process: &'a Value, name: &str) -> Vec<&'a Value> {
    process["layout"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|region| region["name"] == name)
        .collect()
}

fn bytes(regions: &[&Value]) -> u64 {
    regions
        .iter()
        .map(|region| region["end"].as_u64().unwrap() - region["start"].as_u64().unwrap())
        .sum()
}

/// What the program printed: its pid, then the addresses of the 16 MiB segment, the keyed one,
/// the detached one, the kept ring, the pkey'd mapping, the sealed one, the remapped file
/// mapping.
fn printed(line: &str) -> Vec<u64> {
    let mut words = line.split_whitespace();
    let pid = words.next().and_then(|pid| pid.parse().ok());
    pid.into_iter()
        .chain(words.map(|word| u64::from_str_radix(word.trim_start_matches("0x"), 16).unwrap()))
        .collect()
}

fn stopped(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, fields)| fields.trim_start().starts_with('T'))
    })
}

/// A live session of `mapping_ways MAPS stop` (recorded), ended with SIGTERM once the workload
/// has stopped itself, alive, with its layout copied to MAPS; then the workload is killed.
/// Returns the report, what the workload printed, and its layout.
fn traced_until_stopped(scratch: &Scratch, abi: Abi, recording: &Path) -> (Value, String, String) {
    let maps = scratch.file("maps");
    let report_path = scratch.file("report.json");
    let stderr_path = scratch.file("stderr");
    let exe = program("mapping_ways", abi, Runtime::Libc);
    let mut tracer = Command::new(memtrace_bin())
        .args(["--format", "json", "-o"])
        .arg(&report_path)
        .arg("--record")
        .arg(recording)
        .arg("--")
        .arg(&exe)
        .arg(&maps)
        .arg("stop")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A file, not a pipe: the stopped workload inherits it and would hold a pipe open.
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("running memtrace");
    let mut line = String::new();
    BufReader::new(tracer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = *printed(&line)
        .first()
        .unwrap_or_else(|| panic!("printed {line:?}"));
    let give_up = Instant::now() + Duration::from_secs(60);
    while !stopped(pid) {
        assert!(Instant::now() < give_up, "the workload never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &tracer.id().to_string()])
        .status();
    let status = tracer.wait().unwrap();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(
        status.success(),
        "memtrace: {status:?}\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    (report, line, std::fs::read_to_string(&maps).unwrap())
}

#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn the_layout_has_every_segment_ring_key_and_seal(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("mapping-ways-{}", abi.name()));
    let recording = scratch.file("session.mtr");
    let (report, line, maps) = traced_until_stopped(&scratch, abi, &recording);
    let [pid, big, keyed, detached, ring, pkeyed, sealed, remapped] = printed(&line)[..] else {
        panic!("the program printed {line:?}");
    };
    let entry = process(&report, pid);
    let agreement = oracle::agreement(entry, &maps);
    println!(
        "mapping_ways {}: layout agrees with /proc/PID/maps on {} of {} bytes ({:.4}%)",
        abi.name(),
        agreement.agreeing,
        agreement.mapped,
        agreement.ratio() * 100.0
    );
    assert!(
        agreement.ratio() >= 0.999,
        "{:.4}%:\n{}",
        agreement.ratio() * 100.0,
        agreement.differences
    );
    assert_eq!(report["lost_events"], 0);
    assert_eq!(entry["anomalies"]["count"], 0, "{:#}", entry["anomalies"]);

    // The 16 MiB segment, named and sized as the kernel does, kind shared memory.
    let segment = regions_named(entry, "/SYSV00000000");
    assert_eq!(bytes(&segment), 16 * MIB, "{segment:#?}");
    assert_eq!(segment[0]["start"], big);
    assert_eq!(segment[0]["kind"], "shared-anon");
    assert_eq!(segment[0]["perms"], "rw-s");
    // The keyed one, read-only, its size rounded up to pages.
    let keyed_region = entry["layout"]
        .as_array()
        .unwrap()
        .iter()
        .find(|region| region["start"] == keyed)
        .unwrap();
    let keyed_name = keyed_region["name"].as_str().unwrap();
    assert!(keyed_name.starts_with("/SYSV4d54"), "{keyed_name}");
    assert_eq!(keyed_region["perms"], "r--s");
    assert_eq!(bytes(&[keyed_region]), MIB + PAGE);
    // The detached one gone whole, every piece the mprotect made (the 16 MiB above are all
    // the unkeyed segments left); the keyed one may have been attached where it was.
    assert!(
        entry["layout"].as_array().unwrap().iter().all(|region| {
            let start = region["start"].as_u64().unwrap();
            !(detached..detached + 8 * MIB).contains(&start) || region["name"] != "/SYSV00000000"
        }),
        "the detached segment is gone"
    );
    // The kept ring (3 pages for 128 events on this machine's CPUs), the destroyed one gone.
    let rings = regions_named(entry, "/[aio]");
    assert_eq!(rings.len(), 1, "{rings:#?}");
    assert_eq!(rings[0]["start"], ring);
    assert_eq!(rings[0]["perms"], "rw-s");
    // The pkey'd mapping read-only, the sealed one whole despite the munmap and mprotect.
    let at = |address: u64| {
        entry["layout"]
            .as_array()
            .unwrap()
            .iter()
            .find(|region| {
                (region["start"].as_u64().unwrap()..region["end"].as_u64().unwrap())
                    .contains(&address)
            })
            .unwrap_or_else(|| panic!("nothing at {address:#x}"))
    };
    assert_eq!(at(pkeyed)["perms"], "r--p");
    assert_eq!(at(sealed)["perms"], "rw-p");
    assert_eq!(at(sealed + PAGE)["perms"], "rw-p");
    assert_eq!(at(sealed)["sealed"], true);
    assert_eq!(at(sealed + 15 * PAGE)["sealed"], true);
    assert!(at(pkeyed).get("sealed").is_none());
    assert_eq!(at(remapped)["name"], "memfd:mapping_ways");

    // Every call counted: ia32's C library makes its shmat and shmdt through ipc(2), and the
    // program the direct syscalls too.
    let direct = u64::from(abi == Abi::I386);
    assert_eq!(calls(entry, "shmat"), (3 + direct, 0));
    assert_eq!(calls(entry, "shmdt"), (1 + direct, 0));
    assert_eq!(calls(entry, "io_setup"), (2, 0));
    assert_eq!(calls(entry, "io_destroy"), (1, 0));
    assert_eq!(calls(entry, "pkey_mprotect"), (1, 0));
    assert_eq!(calls(entry, "mseal"), (1, 0));
    assert_eq!(calls(entry, "remap_file_pages"), (1, 0));
    // The sealed page's munmap and mprotect failed, and are counted so.
    assert!(calls(entry, "munmap").1 >= 1);
    assert!(calls(entry, "mprotect").1 >= 1);

    // The replay has what the live run had: the segment's size and key, the ring's size.
    let (output, replayed) = replay_json(&scratch, &recording, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut live = report;
    let mut replayed = replayed;
    live["source"] = Value::Null;
    replayed["source"] = Value::Null;
    assert!(
        live == replayed,
        "replay differs from the live run:\nlive: {live:#}\nreplay: {replayed:#}"
    );
}

/// strace in the same run sees the same calls, the failed ones included; ia32's ipc(2) is
/// counted as the shmat or shmdt it made, as strace shows it.
#[rstest]
#[case::x86_64(Abi::X86_64)]
#[case::i386(Abi::I386)]
fn counts_equal_strace(#[case] abi: Abi) {
    require_root();
    let scratch = Scratch::new(&format!("mapping-ways-strace-{}", abi.name()));
    let log = scratch.file("strace.log");
    let exe = program("mapping_ways", abi, Runtime::Libc);
    // Every syscall traced: strace 6.1 names no `mseal`, and shows it only so.
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--",
            "strace",
            "-f",
            "-qq",
            "-o",
            log.to_str().unwrap(),
            exe.to_str().unwrap(),
        ],
    );
    run.assert_success();
    let report = run.report();
    assert_eq!(report["lost_events"], 0);
    let by_strace = oracle::strace_counts(&std::fs::read_to_string(&log).unwrap());
    let program_pid = by_strace
        .iter()
        .find(|(_, counts)| counts.contains_key("shmat"))
        .map(|(pid, _)| *pid)
        .expect("strace saw the program's shmat");
    let fentry = report["backend"]["name"] == "fentry";
    let mut compared = Vec::new();
    for (pid, counts) in &by_strace {
        let entry = process(report, *pid);
        for syscall in REPORTED_SYSCALLS {
            let mut expected = counts.get(syscall).copied().unwrap_or((0, 0));
            // A kernel without mseal (before 6.10) has no function for fentry to attach to:
            // the call fails with ENOSYS in the kernel's table, where only the raw
            // tracepoints see it. It changes no layout.
            if syscall == "mseal" && fentry && expected.0 == expected.1 {
                expected = (0, 0);
            }
            assert_eq!(calls(entry, syscall), expected, "{syscall} of pid {pid}");
            if *pid == program_pid && !matches!(syscall, "mmap" | "munmap" | "mprotect" | "brk") {
                compared.push(format!("{syscall} {}/{}", expected.0, expected.1));
            }
        }
    }
    println!(
        "mapping_ways {} under strace: equal counts, {}",
        abi.name(),
        compared.join(", ")
    );
}
