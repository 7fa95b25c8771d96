//! Processes in a container traced from the host: a Debian 11 root (the cached debootstrap
//! minbase), entered under new mount and pid namespaces in a cgroup of its own. The host has
//! other files at the same paths (glibc 2.36 against the container's 2.31), so a layout right
//! to the byte shows memtrace read the container's own files; the report names the process
//! as the container does.

use std::process::Command;

use memtrace_tests::{
    debian_root::debian_root, maps::agreement, memtrace_json, processes, replay_json, require_root,
    Scratch,
};

/// A cgroup v2 directory for one test, removed when dropped (once its processes are gone).
struct Cgroup {
    path: std::path::PathBuf,
    /// As `/proc/PID/cgroup` names it.
    name: String,
}

impl Cgroup {
    fn new(test: &str) -> Self {
        // The v2 hierarchy: /sys/fs/cgroup itself, or .../unified on a hybrid setup.
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|dir| std::path::Path::new(dir).join("cgroup.procs").exists())
            .expect("a cgroup v2 hierarchy");
        let name = format!("/memtrace-test-{test}-{}", std::process::id());
        let path = std::path::Path::new(mount).join(name.trim_start_matches('/'));
        std::fs::create_dir_all(&path).unwrap();
        Self { path, name }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[test]
fn a_process_in_a_container_is_traced_with_its_own_files_and_names() {
    require_root();
    let root = debian_root();
    let scratch = Scratch::new("container");
    let cgroup = Cgroup::new("container");
    let inside = format!("/tmp/memtrace-container-{}", std::process::id());
    let dir = root.join(inside.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The shell joins the new cgroup, then enters the container; its bash (pid 1 there) makes
    // a 3 MB string and saves its own maps, as seen inside. It lives a second first, as a
    // service does: memtrace reads who it is from /proc, which only a live process has.
    let script = format!(
        "sleep 1; x=$(head -c 3000000 /dev/zero | tr '\\0' a); cat /proc/$$/maps > {inside}/maps; \
         echo $$ > {inside}/pid"
    );
    let enter = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --mount --pid --fork --mount-proc={}/proc chroot {} /bin/bash -c \"$0\"",
        cgroup.path.display(),
        root.display(),
        root.display()
    );
    let recording = scratch.file("container.mtr");
    let run = memtrace_json(
        &scratch,
        &[
            "--follow",
            "--record",
            recording.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &enter,
            &script,
        ],
    );
    run.assert_success();
    let report = run.report();
    let bash = processes(report)
        .iter()
        .find(|p| p["container"]["root"] == root.to_str().unwrap() && p["container"]["ns_pid"] == 1)
        .unwrap_or_else(|| panic!("no bash in the container root: {report:#}"));

    // Its names as the container sees them.
    let ns_pid = std::fs::read_to_string(dir.join("pid")).unwrap();
    assert_eq!(bash["exe"], "/bin/bash");
    assert_eq!(ns_pid.trim(), "1");
    assert_ne!(bash["pid"], 1);
    assert_eq!(bash["container"]["cgroup"], cgroup.name.as_str());

    // Its layout, rebuilt from the container's own binaries.
    let maps = std::fs::read_to_string(dir.join("maps")).unwrap();
    let (ratio, differences) = agreement(&maps, bash);
    assert!(
        ratio >= 0.999,
        "the container's bash: rebuilt layout agrees with its /proc/PID/maps on {:.3}% of \
         bytes:\n{differences}",
        ratio * 100.0
    );
    assert!(
        bash["layout"]
            .as_array()
            .unwrap()
            .iter()
            .any(|region| region["name"] == "/usr/lib/x86_64-linux-gnu/ld-2.31.so"),
        "the container's own ld.so (glibc 2.31), named as inside: {bash:#}"
    );

    // The recording carries who it is: a replay names it the same way.
    let (replayed, replay) = replay_json(&scratch, &recording, &[]);
    assert!(replayed.status.success(), "{replayed:?}");
    let again = processes(&replay)
        .iter()
        .find(|p| p["pid"] == bash["pid"])
        .expect("the bash in the replay");
    assert_eq!(again["container"], bash["container"]);

    // The text report says who it is.
    let text = Command::new(memtrace_tests::memtrace_bin())
        .args(["--follow", "--", "/bin/sh", "-c", &enter, &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "container: pid 1 in its namespace, cgroup {}",
            cgroup.name
        )),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
