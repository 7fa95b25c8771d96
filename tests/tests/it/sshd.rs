//! Incident 3 end to end: memtrace attached to a real OpenSSH server with --follow sees the
//! session it spawns, the exec into bash, bash's layout and its brk headroom, and a replay of
//! the recording tells the same.

use std::{
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{attach, processes, replay_json, require_root, Scratch};
use serde_json::Value;

pub(crate) const SSHD: &str = "/usr/sbin/sshd";
const TEST_USER: &str = "memtrace-ssh";

/// Kills the child when the test ends, however it ends.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[track_caller]
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn ensure_test_user() {
    let exists = Command::new("id")
        .arg(TEST_USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", TEST_USER]));
    }
    // A locked account ('!') may not log in even with a key when PAM is off; '*' means "no
    // password" without locking.
    run(Command::new("usermod").args(["-p", "*", TEST_USER]));
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn start_sshd(scratch: &Scratch, port: u16) -> Guard {
    let host_key = scratch.file("host_key");
    keygen(&host_key);
    let client_key = scratch.file("client_key");
    keygen(&client_key);
    let authorized = scratch.file("authorized_keys");
    std::fs::copy(scratch.file("client_key.pub"), &authorized).unwrap();
    let config = scratch.file("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nAllowUsers {TEST_USER}\n",
            host_key.display(),
            scratch.file("sshd.pid").display(),
            authorized.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let sshd = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    Guard(sshd)
}

pub(crate) fn login(scratch: &Scratch, port: u16, command: &str) -> String {
    let output = Command::new("ssh")
        .arg("-i")
        .arg(scratch.file("client_key"))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &port.to_string(),
        ])
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .arg(command)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ssh login failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn is_bash(process: &Value) -> bool {
    process["execs"].as_array().is_some_and(|execs| {
        execs
            .iter()
            .any(|e| e["filename"].as_str().is_some_and(|f| f.ends_with("/bash")))
    })
}

#[test]
fn an_ssh_login_is_traced_through_sshd_and_replayed() {
    require_root();
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} missing: `cargo xtask setup` installs openssh-server"
    );
    ensure_test_user();
    let scratch = Scratch::new("sshd");
    let port = free_port();
    let sshd = start_sshd(&scratch, port);

    let recording = scratch.file("sshd.mtr");
    let live_report = scratch.file("live.json");
    let sshd_pid = sshd.0.id().to_string();
    let mut tracer = attach(&[
        "--pid",
        &sshd_pid,
        "--follow",
        "--record",
        recording.to_str().unwrap(),
        "--format",
        "json",
        "-o",
        live_report.to_str().unwrap(),
    ]);

    let said = login(&scratch, port, "echo hello-from-bash; ls / > /dev/null");
    assert_eq!(said.trim(), "hello-from-bash");
    // sshd's session ends after the client sees its output; give the exits a moment.
    std::thread::sleep(Duration::from_millis(500));
    run(Command::new("kill").args(["-INT", &tracer.id().to_string()]));
    assert!(tracer.wait().unwrap().success());
    drop(sshd);

    let live: Value =
        serde_json::from_str(&std::fs::read_to_string(&live_report).unwrap()).unwrap();
    let traced = processes(&live);
    assert!(
        traced.len() >= 3,
        "sshd and the session it spawned: {live:#}"
    );
    let bash: Vec<&Value> = traced.iter().filter(|p| is_bash(p)).collect();
    assert!(!bash.is_empty(), "the login exec'd bash: {live:#}");
    let bash = bash[0];
    let exec = bash["execs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["filename"].as_str().unwrap().ends_with("/bash"))
        .unwrap();
    assert_eq!(exec["to_abi"], "x86_64");
    assert!(exec["from_abi"] == "x86_64" || exec["from_abi"] == "i386");
    assert!(
        traced.iter().any(|p| p["pid"] == bash["ppid"]),
        "bash's parent is one of sshd's processes"
    );
    assert!(
        bash["brk"]["start"].as_u64().is_some(),
        "bash's heap: {:#}",
        bash["brk"]
    );
    assert!(bash["brk"]["room_total"].as_u64().unwrap() > 1 << 20);
    assert!(bash["layout"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"].as_str().unwrap().ends_with("/bash")));
    assert!(
        traced
            .iter()
            .any(|p| p["exe"].as_str().unwrap_or("").ends_with("/ls")),
        "bash's child ls"
    );

    let (output, mut replayed) = replay_json(&scratch, &recording, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut live = live;
    assert_eq!(replayed["source"], "replay");
    live["source"] = Value::Null;
    replayed["source"] = Value::Null;
    // How the syscalls were hooked travels in the recording: the replay says it too.
    assert!(live == replayed, "the replay tells what the live run told");
}
