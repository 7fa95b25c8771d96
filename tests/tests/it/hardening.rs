//! memtrace runs as root: what it writes cannot be redirected, bad input gets one clear line
//! and a non-zero exit, and a recording never loses events silently (issue #13, one test per
//! row of its table).

use std::{
    fs,
    os::unix::fs::{symlink, MetadataExt, PermissionsExt},
    path::Path,
    process::{Command, Output},
};

use memtrace_tests::{
    assert_one_line_error, memtrace, memtrace_bin, memtrace_json, program, record_mmap_loop,
    recording_frames, replay_json, require_root, Abi, Runtime, Scratch,
};

fn run(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Output {
    let mut command = Command::new(memtrace_bin());
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    for name in remove {
        command.env_remove(name);
    }
    command.output().expect("running memtrace")
}

#[test]
fn row1_a_symlink_at_the_output_is_refused_and_its_target_untouched() {
    let scratch = Scratch::new("symlink-output");
    let victim = scratch.file("victim");
    fs::write(&victim, "precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let link = scratch.file("x.mtr");
    symlink(&victim, &link).unwrap();
    let link = link.to_str().unwrap();
    for args in [["--record", link, "--", "true"], ["-o", link, "--", "true"]] {
        let output = memtrace(&args);
        assert_one_line_error(
            &output,
            &format!("refusing to write {link}: it is a symbolic link"),
        );
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn row2_a_file_another_user_owns_is_refused() {
    require_root();
    let scratch = Scratch::new("foreign-output");
    let theirs = scratch.file("theirs.out");
    fs::write(&theirs, "their data").unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let path = theirs.to_str().unwrap();
    for args in [["--record", path, "--", "true"], ["-o", path, "--", "true"]] {
        let output = memtrace(&args);
        assert_one_line_error(
            &output,
            "it belongs to uid 65534, neither root nor you (uid 0)",
        );
    }
    let metadata = fs::metadata(&theirs).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (65534, 0o666));
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "their data");

    // Under sudo, the invoking user's own file is replaced by a new private inode.
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let old_inode = metadata.ino();
    let output = run(
        &["-o", path, "--", "true"],
        &[
            ("SUDO_UID", "65534"),
            ("SUDO_GID", "65534"),
            ("SUDO_USER", "nobody"),
        ],
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let metadata = fs::metadata(&theirs).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert_ne!(metadata.ino(), old_inode);
}

#[test]
fn row5_a_dropped_or_repeated_frame_is_reported_with_a_non_zero_exit() {
    require_root();
    let scratch = Scratch::new("frame-loss");
    let recording = record_mmap_loop(&scratch, "loop.mtr", "20000");
    let bytes = fs::read(&recording).unwrap();
    let frames = recording_frames(&bytes);
    let events: Vec<_> = frames.iter().filter(|f| f.2 == 2).collect();
    assert!(events.len() >= 4, "{} events frames", events.len());
    let (start, end, _) = *events[2];

    let (output, intact) = replay_json(&scratch, &recording, &[]);
    assert!(output.status.success(), "{output:?}");
    let all = intact["events"].as_u64().unwrap();

    let dropped = [&bytes[..start], &bytes[end..]].concat();
    let repeated = [
        &bytes[..end],
        &bytes[start..end],
        &bytes[start..end],
        &bytes[end..],
    ]
    .concat();
    for (name, damaged, expected) in [
        ("dropped", dropped, "1 frame missing"),
        (
            "repeated",
            repeated,
            "2 frames repeated or out of order skipped",
        ),
    ] {
        let path = scratch.file(name);
        fs::write(&path, damaged).unwrap();
        let (output, report) = replay_json(&scratch, &path, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        let replayed = report["events"].as_u64().unwrap();
        if name == "dropped" {
            assert!(replayed < all, "{replayed} of {all}");
            assert!(
                stderr.contains(&format!("{} events", all - replayed)),
                "{stderr}"
            );
        } else {
            // Nothing is counted twice.
            assert_eq!(replayed, all);
        }
    }
}

#[test]
fn row6_a_full_disk_keeps_the_report_and_says_what_the_recording_misses() {
    require_root();
    let scratch = Scratch::new("full-disk");
    let disk = scratch.file("disk");
    fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            // Smaller than the recording of 40000 events, compressed (about 240 KiB).
            "size=64k",
            "memtrace-test",
            disk.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs");
    struct Unmount<'p>(&'p Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);

    let recording = disk.join("rec.mtr");
    let workload = program("mmap_loop", Abi::X86_64, Runtime::Libc);
    let run = memtrace_json(
        &scratch,
        &[
            "--no-stacks",
            "--record",
            recording.to_str().unwrap(),
            "--",
            workload.to_str().unwrap(),
            "20000",
        ],
    );
    let stderr = run.stderr();
    assert_eq!(run.output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // The report has every event, though the recording could not keep them.
    let process = &run.report()["processes"][0];
    assert!(
        memtrace_tests::calls(process, "munmap").0 >= 20000,
        "{stderr}"
    );
    let kept: u64 = stderr
        .split("the recording holds the first ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of kept events in {stderr}"));
    assert!(kept > 0 && kept < 40000, "{kept}");
    // What the recording kept replays, and replay says it is cut off.
    let (output, report) = replay_json(&scratch, &recording, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("truncated after {kept} events"))
    );
    assert!(report["events"].as_u64().unwrap() <= kept);
}

#[test]
fn row7_a_truncated_recording_fails_with_until_too() {
    require_root();
    let scratch = Scratch::new("truncated-until");
    let recording = record_mmap_loop(&scratch, "loop.mtr", "2000");
    let bytes = fs::read(&recording).unwrap();
    let cut = scratch.file("cut.mtr");
    fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    for extra in [&[][..], &["--until", "1000"], &["--until", "0"]] {
        let (output, _) = replay_json(&scratch, &cut, extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains("truncated after"), "{stderr}");
    }
}

#[test]
fn row8_huge_or_invalid_times_get_one_line() {
    for value in ["1e30", "99999999999999999999", "inf", "NaN", "0"] {
        let output = memtrace(&["--duration", value, "--", "true"]);
        assert_one_line_error(&output, "--duration");
        if value != "0" {
            let output = memtrace(&["replay", "/nonexistent.mtr", "--until", value]);
            assert_one_line_error(&output, "is out of range: give 0 to 1000000000 seconds");
        }
    }
}

#[test]
fn row9_two_outputs_naming_one_file_are_refused_up_front() {
    let scratch = Scratch::new("same-output");
    fs::create_dir(scratch.file("dir")).unwrap();
    symlink(scratch.path(), scratch.file("alias")).unwrap();
    let same = scratch.file("same.out");
    let dotted = scratch.file("dir/../same.out");
    let aliased = scratch.file("alias/same.out");
    for other in [&same, &dotted, &aliased] {
        let output = memtrace(&[
            "--record",
            same.to_str().unwrap(),
            "-o",
            other.to_str().unwrap(),
            "--",
            "true",
        ]);
        assert_one_line_error(&output, "--record and -o name the same file");
        assert!(!same.exists(), "nothing is written");
    }
    // A replay's report must not replace the recording it reads.
    fs::write(&same, "not even a recording").unwrap();
    let output = memtrace(&[
        "replay",
        same.to_str().unwrap(),
        "-o",
        aliased.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, "-o and the recording name the same file");
    assert_eq!(fs::read_to_string(&same).unwrap(), "not even a recording");
}

#[test]
fn row10_an_inconsistent_sudo_environment_is_refused() {
    require_root();
    /// Variables set, variables removed, the refusal expected.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 4] = [
        (
            &[("SUDO_UID", "65534")],
            &["SUDO_GID", "SUDO_USER"],
            "SUDO_GID and SUDO_USER not set",
        ),
        (
            &[
                ("SUDO_UID", "abc"),
                ("SUDO_GID", "65534"),
                ("SUDO_USER", "nobody"),
            ],
            &[],
            "SUDO_UID=abc is not a number",
        ),
        (
            &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
            &["SUDO_USER"],
            "SUDO_USER not set",
        ),
        (
            &[("SUDO_USER", "nobody")],
            &["SUDO_UID", "SUDO_GID"],
            "SUDO_UID and SUDO_GID not set",
        ),
    ];
    for (set, unset, expected) in cases {
        let output = run(&["--", "id", "-u"], set, unset);
        assert_one_line_error(&output, expected);
        assert!(output.stdout.is_empty(), "the command never ran");
    }
    // All three: the command runs as that user, with that user's groups only.
    let output = run(
        &["-o", "/dev/null", "--", "sh", "-c", "id -u; id -G"],
        &[
            ("SUDO_UID", "65534"),
            ("SUDO_GID", "65534"),
            ("SUDO_USER", "nobody"),
        ],
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("65534"), "{stdout}");
    let groups = lines.next().unwrap_or_default();
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "root's groups kept: {groups}"
    );
}

#[test]
fn row11_kernel_threads_and_zombies_cannot_be_attached() {
    require_root();
    let output = memtrace(&["--pid", "2"]);
    assert_one_line_error(&output, "cannot trace process 2: it is a kernel thread");

    // A child this test never reaps is a zombie once it exits.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let stat = format!("/proc/{pid}/stat");
    while !fs::read_to_string(&stat).unwrap().contains(") Z") {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let output = memtrace(&["--pid", &pid.to_string()]);
    assert_one_line_error(
        &output,
        &format!("cannot trace process {pid}: it is a zombie"),
    );
    child.wait().unwrap();
}

#[test]
fn row13_a_mistyped_option_is_not_taken_as_the_command() {
    let output = memtrace(&["--formt", "json", "--", "true"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unexpected argument '--formt'"), "{stderr}");
    assert!(!stderr.contains("cannot run"), "{stderr}");
}

#[test]
fn row13_the_command_keeps_its_own_options() {
    require_root();
    // A non-option first word starts the command; its options are its own. (Checked through
    // what the command prints, not its exit status, which #13 row 12 can lose.)
    for args in [
        &["-o", "/dev/null", "printf", "%s,", "-x", "--format"][..],
        &["-o", "/dev/null", "--", "printf", "%s,", "-x", "--format"],
    ] {
        let output = memtrace(args);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "-x,--format,",
            "{output:?}"
        );
    }
}
