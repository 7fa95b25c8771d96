//! The shipped binary (`cargo xtask dist`: static, for x86_64-unknown-linux-musl) on an old
//! userland: inside a chroot of Debian 11 (glibc 2.31, older than the 2.34 the glibc build
//! needs), it traces that userland's own bash, its report agrees with the kernel, and its
//! recording replays on the host to the same report.

use std::{path::PathBuf, process::Command};

use memtrace_tests::{
    debian_root::debian_root, json_differences, maps::agreement, memtrace_bin, processes,
    require_root, workspace_root,
};
use serde_json::Value;

/// The static binary under test: `cargo xtask test` builds it and says where.
#[track_caller]
fn dist_bin() -> PathBuf {
    let path = std::env::var_os("MEMTRACE_DIST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/dist/memtrace"));
    assert!(
        path.is_file(),
        "no static memtrace at {}: run `cargo xtask dist` (cargo xtask test does), or set \
         MEMTRACE_DIST_BIN",
        path.display()
    );
    path
}

#[test]
fn file_says_statically_linked() {
    let output = Command::new("file").arg(dist_bin()).output().unwrap();
    let description = String::from_utf8_lossy(&output.stdout);
    // A static-pie (musl's default: static, and still placed at a random address) is
    // "static-pie linked"; neither form has an interpreter or needed libraries.
    assert!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "{description}"
    );
    assert!(description.contains("stripped"), "{description}");
    assert!(!description.contains("not stripped"), "{description}");
}

/// The report without what differs between a live run and its replay by design.
fn comparable(mut report: Value) -> Value {
    let report_fields = report.as_object_mut().unwrap();
    report_fields.remove("source");
    // How the syscalls were hooked travels in the recording: the replay says it too.
    report
}

/// A difference of the form `…by_stack[N].frames[M].function: null vs "name"` (or the call
/// site built from those names): replay left unnamed a frame the live run named.
fn is_unnamed_on_the_host(difference: &str) -> bool {
    let in_frame_name = (difference.contains(".unreleased.by_stack[")
        || difference.contains(".allocated_by_stack["))
        && [".function: null vs ", ".file: null vs ", ".line: null vs "]
            .iter()
            .any(|field| difference.contains(field));
    // Call sites are named from those frames, in the unreleased groups and the timeline.
    let call_site = difference.contains(".call_site: ")
        || (difference.contains(".timeline.groups[") && difference.contains("].group: "));
    in_frame_name || call_site
}

#[test]
fn traces_an_old_userland_from_inside_it_and_replays_on_the_host() {
    require_root();
    let root = debian_root();
    // Inside the root, so the chroot sees it; per test process, so runs do not collide.
    let inside = format!("/tmp/memtrace-static-{}", std::process::id());
    let dir = root.join(inside.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(dist_bin(), dir.join("memtrace")).unwrap();

    // bash builds a 3 MB string on its heap, then saves its own maps;
    // the final builtin keeps bash from exec-ing the last command in its place.
    let script = format!(
        "x=$(head -c 3000000 /dev/zero | tr '\\0' a); cat /proc/$$/maps > {inside}/maps; \
         echo ${{#x}} > {inside}/length"
    );
    // A private mount namespace gives the chroot the /proc and /sys memtrace reads (the
    // processes, the kernel's BTF) without touching the shared cached root for anyone else.
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount --rbind /proc \"$1/proc\" && mount --rbind /sys \"$1/sys\" && \
             root=$1 && shift && exec chroot \"$root\" \"$@\"",
        )
        .arg("sh")
        .arg(&root)
        .arg(format!("{inside}/memtrace"))
        .args(["--format", "json", "-o"])
        .arg(format!("{inside}/live.json"))
        .arg("--record")
        .arg(format!("{inside}/session.mtr"))
        .args(["--", "/bin/bash", "-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the static memtrace failed in the Debian 11 chroot ({:?}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("length")).unwrap().trim(),
        "3000000"
    );

    let live: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("live.json")).unwrap()).unwrap();
    let traced = processes(&live);
    assert_eq!(traced.len(), 1, "only bash is traced: {live:#}");
    let bash = &traced[0];
    assert_eq!(bash["exe"], "/bin/bash", "{bash:#}");
    let maps = std::fs::read_to_string(dir.join("maps")).unwrap();
    let (ratio, differences) = agreement(&maps, bash);
    assert!(
        ratio >= 0.999,
        "bash's rebuilt layout agrees with its /proc/PID/maps for {:.3}% of bytes:\n{differences}",
        ratio * 100.0
    );
    // bash's own malloc grows the brk heap for the 3 MB string.
    let heap = bash["brk"]["end"].as_u64().unwrap() - bash["brk"]["start"].as_u64().unwrap();
    assert!(heap >= 3_000_000, "heap of {heap} bytes: {bash:#}");

    // The host's glibc build replays the recording made by the static build in the chroot.
    let replayed = Command::new(memtrace_bin())
        .arg("replay")
        .arg(dir.join("session.mtr"))
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(replayed["source"], "replay");
    // Everything is the same but the names of call-stack frames in the old userland's binaries:
    // the host has other builds at those paths (glibc 2.36, not 2.31), and replay never names a
    // frame from a different build (the recording carries each module's build-id), so those
    // frames are module+offset on the host. Any other difference is a bug.
    let differences = json_differences("", &comparable(replayed), &comparable(live));
    let unexplained: Vec<&String> = differences
        .iter()
        .filter(|line| !is_unnamed_on_the_host(line))
        .collect();
    assert!(
        unexplained.is_empty(),
        "replay on the host differs from the live report:\n{differences:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
