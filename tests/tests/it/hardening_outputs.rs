//! memtrace's outputs, second round (issue #29): the output directory is resolved once, a name
//! planted during the session is replaced and never loses the report, one failing output does
//! not drop the others, a full disk still says what the recording kept, temporaries of a
//! killed run are cleaned, bad paths and contradictory flags get one line, and the launched
//! command has memtrace as its parent.

use std::{
    fs,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::PathBuf,
    process::{Command, Stdio},
};

use memtrace_tests::{
    assert_one_line_error, memtrace, memtrace_bin, program, require_root, Abi, Runtime, Scratch,
};

const NOBODY: u32 = 65534;

/// A shell command run as another user (nobody).
fn as_nobody(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]).uid(NOBODY).gid(NOBODY);
    command
}

/// Issue #29, row 1: another user swaps the output directory for a link to root's directory
/// while root's session runs. 200 runs: root's file is never changed, and every run either
/// writes its report into the directory it checked, or refuses before tracing (when the check
/// met the link).
#[test]
fn a_directory_swapped_during_the_session_never_redirects_the_report() {
    require_root();
    let scratch = Scratch::new("dir-swap");
    // The scratch directory is root's 0700 by default: nobody must be able to reach pub/.
    fs::set_permissions(scratch.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let public = scratch.file("pub");
    fs::create_dir(&public).unwrap();
    fs::set_permissions(&public, fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = scratch.file("victim");
    fs::create_dir(&victim).unwrap();
    let runs = 200;
    for run in 0..runs {
        fs::write(victim.join(format!("report-{run}.txt")), "precious").unwrap();
    }
    let status = as_nobody(&format!("mkdir {}/d", public.display()))
        .status()
        .unwrap();
    assert!(status.success());
    // The swap, as fast as it goes: d moved away and replaced by a link to root's directory,
    // then put back.
    let mut racer = as_nobody(&format!(
        "cd {} && while [ ! -e stop ]; do mv d d.old && ln -s {} d; rm -f d; mv d.old d; done",
        public.display(),
        victim.display()
    ))
    .stderr(Stdio::null())
    .spawn()
    .unwrap();

    let mut outcomes = Vec::new();
    for run in 0..runs {
        let ran = scratch.file(&format!("ran-{run}"));
        let output = memtrace(&[
            "-o",
            public.join(format!("d/report-{run}.txt")).to_str().unwrap(),
            "--",
            "touch",
            ran.to_str().unwrap(),
        ]);
        outcomes.push((output, ran.exists()));
    }
    fs::write(public.join("stop"), "").unwrap();
    racer.wait().unwrap();
    // The racer may have stopped between its moves: the directory is d or d.old.
    let dir = ["d", "d.old"]
        .map(|name| public.join(name))
        .into_iter()
        .find(|dir| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()))
        .expect("nobody's directory");

    let mut written = 0;
    for (run, (output, ran)) in outcomes.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let report = dir.join(format!("report-{run}.txt"));
        if output.status.success() {
            written += 1;
            let text = fs::read_to_string(&report).unwrap_or_else(|e| panic!("run {run}: {e}"));
            assert!(text.starts_with("memtrace live:"), "run {run}: {text}");
            assert_eq!(fs::metadata(&report).unwrap().uid(), 0);
        } else {
            // Refused at the check: the command never ran, nothing was written.
            assert!(
                !ran,
                "run {run} traced the command before refusing: {stderr}"
            );
            assert!(!report.exists(), "run {run}");
            assert_eq!(stderr.lines().count(), 1, "run {run}: {stderr}");
            assert!(
                stderr.contains("refusing to write") || stderr.contains("cannot write"),
                "run {run}: {stderr}"
            );
        }
    }
    for run in 0..runs {
        assert_eq!(
            fs::read_to_string(victim.join(format!("report-{run}.txt"))).unwrap(),
            "precious",
            "root's file {run} was changed"
        );
    }
    assert_eq!(fs::read_dir(&victim).unwrap().count(), runs);
    // Most runs meet the real directory: the race must not make memtrace refuse them all.
    assert!(written > 0, "no run wrote its report");
    println!("{written} of {runs} runs wrote their report; the others refused before tracing");
}

/// A link planted at -o's name during the session (here by the traced command itself, after
/// the check) is replaced by the report, and its target is untouched.
#[test]
fn a_link_planted_during_the_session_is_replaced_by_the_report() {
    require_root();
    let scratch = Scratch::new("planted-link");
    let victim = scratch.file("victim");
    fs::write(&victim, "precious").unwrap();
    let out = scratch.file("report.txt");
    let output = memtrace(&[
        "-o",
        out.to_str().unwrap(),
        "--",
        "ln",
        "-s",
        victim.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let metadata = fs::symlink_metadata(&out).unwrap();
    assert!(metadata.is_file(), "the link is still there");
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert!(fs::read_to_string(&out)
        .unwrap()
        .starts_with("memtrace live:"));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
}

/// An output that fails (a directory made at --html's name during the session) loses only
/// itself: -o is written, and the one line names both.
#[test]
fn a_failing_side_output_does_not_drop_the_report() {
    require_root();
    let scratch = Scratch::new("side-output");
    let text = scratch.file("q.txt");
    let html = scratch.file("q.html");
    let output = memtrace(&[
        "-o",
        text.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--",
        "mkdir",
        html.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &output,
        &format!(
            "--html {} not written (cannot write {}: Is a directory",
            html.display(),
            html.display()
        ),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("written: -o {}", text.display())),
        "{stderr}"
    );
    assert!(fs::read_to_string(&text)
        .unwrap()
        .starts_with("memtrace live:"));
    assert!(html.is_dir());
}

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> Self {
        fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "memtrace-test",
            ])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a small tmpfs");
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk for both --record and -o: the report's failure and what the recording kept are
/// both said.
#[test]
fn a_full_disk_says_what_the_recording_kept_even_when_the_report_fails() {
    require_root();
    let scratch = Scratch::new("full-disk-both");
    let disk = SmallDisk::mount(scratch.file("disk"), "100k");
    let workload = program("mmap_loop", Abi::X86_64, Runtime::Libc);
    let output = memtrace(&[
        "--no-stacks",
        "--show-layout",
        "--record",
        disk.0.join("rec.mtr").to_str().unwrap(),
        "-o",
        disk.0.join("report.txt").to_str().unwrap(),
        "--",
        workload.to_str().unwrap(),
        "20000",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the recording holds the first "),
        "no recording line: {stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

/// A temporary left by a killed run (pid gone) is removed at the next check in its
/// directory; a live process's and another user's are kept.
#[test]
fn temporaries_of_a_killed_run_are_removed_at_the_next_start() {
    require_root();
    let scratch = Scratch::new("stale-temporaries");
    let stale = scratch.file(".memtrace-4194305-77-0badf00d.tmp");
    fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
    let theirs = scratch.file(".memtrace-4194305-78-0badf00d.tmp");
    fs::write(&theirs, "").unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let other = scratch.file("unrelated.tmp");
    fs::write(&other, "").unwrap();
    let output = memtrace(&["-o", scratch.file("r.txt").to_str().unwrap(), "--", "true"]);
    assert!(output.status.success(), "{output:?}");
    assert!(!stale.exists());
    assert!(theirs.exists() && other.exists());
}

#[test]
fn pseudo_file_systems_and_odd_paths_get_one_whole_line() {
    let output = memtrace(&["-o", "/proc/self/comm", "--", "true"]);
    assert_one_line_error(
        &output,
        "refusing to write /proc/self/comm: its directory is on /proc, where no file can be created",
    );
    // A newline in a path is shown escaped, and the reason after it is kept.
    let output = memtrace(&["-o", "/nonexistent\nmemtrace/x", "--", "true"]);
    assert_one_line_error(
        &output,
        "cannot write /nonexistent\\nmemtrace/x: No such file or directory",
    );
}

#[test]
fn contradictory_flags_are_refused() {
    for args in [
        &["--stacks", "--no-stacks", "--", "true"][..],
        &["--no-stacks", "--stack-min-size", "0", "--", "true"],
    ] {
        let output = memtrace(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
}

/// The launched command's parent is memtrace, as /proc says, for both ABIs.
#[test]
fn the_launched_command_has_memtrace_as_its_parent() {
    require_root();
    let scratch = Scratch::new("ppid");
    for abi in [Abi::X86_64, Abi::I386] {
        let workload = program("mmap_loop", abi, Runtime::Libc);
        let report = scratch.file("report.json");
        let mut child = Command::new(memtrace_bin())
            .args(["--format", "json", "-o", report.to_str().unwrap(), "--"])
            .arg(&workload)
            .arg("10")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let memtrace_pid = child.id();
        assert!(child.wait().unwrap().success());
        let report: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        let process = &memtrace_tests::processes(&report)[0];
        assert_eq!(process["ppid"], memtrace_pid, "{abi:?}: {process:#}");
    }
}
