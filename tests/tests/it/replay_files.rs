//! Replay reads binaries named by the recording, which anyone may craft: a module path that
//! names a FIFO (or a device) must not make it block, and is not read as a module.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{memtrace, memtrace_bin, program, require_root, Abi, Runtime, Scratch};

#[test]
fn a_module_path_naming_a_fifo_does_not_block_replay() {
    require_root();
    let scratch = Scratch::new("replay-fifo");
    // A private copy of the program, so its path can be swapped for a FIFO afterwards.
    let exe = scratch.file("bigalloc");
    std::fs::copy(program("bigalloc", Abi::X86_64, Runtime::Libc), &exe).unwrap();
    let recording = scratch.file("session.mtr");
    let maps = scratch.file("maps");
    let output = memtrace(&[
        "--record",
        recording.to_str().unwrap(),
        "-o",
        "/dev/null",
        "--",
        exe.to_str().unwrap(),
        "2",
        maps.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");

    // The recording names the program as a module of its call stacks; now that path is a FIFO
    // nobody will ever write to.
    std::fs::remove_file(&exe).unwrap();
    assert!(Command::new("mkfifo").arg(&exe).status().unwrap().success());

    let mut replay = Command::new(memtrace_bin())
        .arg("replay")
        .arg(&recording)
        .args(["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replay.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            replay.kill().unwrap();
            panic!("replay blocked on the FIFO named by the recording");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = replay.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The program's frames are named by module and offset only: the FIFO is not its binary.
    let text = report.to_string();
    let module = exe.to_str().unwrap();
    assert!(
        text.contains(module),
        "the program's frames are kept: {report:#}"
    );
    assert!(!text.contains("process_image"), "{report:#}");
}
