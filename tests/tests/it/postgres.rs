//! PostgreSQL 15 (Debian's), a forking server no one here wrote: a throw-away cluster in a
//! cgroup of its own, its postmaster attached to with `--pid --follow` while `pgbench -C`
//! connects anew for every transaction, so hundreds of backends are forked, serve one
//! transaction and exit within milliseconds. Their shared memory is the postmaster's (an
//! anonymous shared mapping and a small SysV segment, attached before memtrace was) and
//! POSIX dynamic shared memory of their own.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_tests::{oracle, process, processes, require_root, Scratch, Tracer};

use memtrace_tests::TestCgroup as Cgroup;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A cluster initialised in `data`, its postmaster listening only on a socket in `socket`.
struct Cluster {
    postmaster: Child,
    socket: PathBuf,
    port: u16,
}

impl Cluster {
    /// initdb, then the postmaster started as user postgres in `cgroup`; returns once it
    /// accepts connections, with pgbench's tables made.
    fn start(scratch: &Scratch, cgroup: &Cgroup) -> Self {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "PostgreSQL 15 is not installed (apt-get install postgresql-15)"
        );
        let data = scratch.file("data");
        let socket = scratch.file("socket");
        std::fs::create_dir_all(&socket).unwrap();
        // The scratch directory is root's: postgres must reach its cluster through it.
        for dir in [scratch.path(), socket.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let initdb = as_postgres(&format!("{BIN}/initdb"))
            .args(["--auth=trust", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = 20000 + (std::process::id() % 10000) as u16;
        // The shell joins the cgroup and becomes setpriv, which becomes the postmaster: its
        // pid is the shell's.
        let postmaster = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec setpriv --reuid=postgres --regid=postgres \
                 --init-groups {BIN}/postgres -D {} -k {} -p {port} -c listen_addresses= \
                 -c fsync=off -c logging_collector=off",
                cgroup.path.display(),
                data.display(),
                socket.display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.file("postgres.log")).unwrap())
            .spawn()
            .unwrap();
        let cluster = Self {
            postmaster,
            socket,
            port,
        };
        let give_up = Instant::now() + Duration::from_secs(60);
        while !cluster.pg("pg_isready").status().unwrap().success() {
            assert!(Instant::now() < give_up, "the postmaster never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let init = cluster
            .pg("pgbench")
            .args(["-i", "-q", "postgres"])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "pgbench -i: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        cluster
    }

    /// `/usr/lib/postgresql/15/bin/NAME` connecting to this cluster as postgres.
    fn pg(&self, name: &str) -> Command {
        let mut command = Command::new(Path::new(BIN).join(name));
        command
            .args(["-U", "postgres", "-h"])
            .arg(&self.socket)
            .args(["-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    fn pid(&self) -> u32 {
        self.postmaster.id()
    }

    /// The postmaster's children now.
    fn children(&self) -> Vec<u32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|child| child.parse().unwrap())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate shutdown: nothing of this cluster is kept. A test that failed while the
        // cluster was stopped left its processes so, and a stopped backend would never end.
        for pid in std::iter::once(self.pid()).chain(self.children()) {
            let _ = signal("CONT", pid);
        }
        let _ = signal("QUIT", self.pid());
        let _ = self.postmaster.wait();
    }
}

fn as_postgres(program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        program,
    ]);
    command
}

fn signal(name: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn pgbench_connections_are_traced_from_the_postmaster_with_their_cgroup() {
    require_root();
    let scratch = Scratch::new("postgres");
    let cgroup = Cgroup::new("postgres");
    let cluster = Cluster::start(&scratch, &cgroup);
    let postmaster = cluster.pid();
    let report_path = scratch.file("report.json");
    let tracer = Tracer::attach(&[
        "--pid",
        &postmaster.to_string(),
        "--follow",
        "--keep-exited",
        "16",
        "--format",
        "json",
        "-o",
        report_path.to_str().unwrap(),
    ]);
    // A client that stays: its backend, forked while traced, is alive at the end.
    let mut client = cluster
        .pg("psql")
        .args(["-c", "select pg_sleep(120)", "postgres"])
        .spawn()
        .unwrap();
    let bench = cluster
        .pg("pgbench")
        .args(["-C", "-c", "4", "-j", "2", "-T", "4", "-n", "postgres"])
        .output()
        .unwrap();
    assert!(
        bench.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    // The last connections' backends exit as their clients go.
    std::thread::sleep(Duration::from_millis(300));

    // Everything of the cluster stopped, alive, while its layouts are read and memtrace ends.
    assert!(signal("STOP", postmaster));
    let mut live = vec![postmaster];
    live.extend(cluster.children());
    for &pid in &live[1..] {
        signal("STOP", pid);
    }
    let client_backend = live[1..]
        .iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|title| title.contains("[local] SELECT"))
        })
        .expect("the client's backend");
    let maps: Vec<(u32, String)> = live
        .iter()
        .filter_map(|&pid| {
            Some((
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?,
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(signal("TERM", tracer.child.id()));
    let (status, stderr) = tracer.wait(Duration::from_secs(60));
    for &pid in &live {
        signal("CONT", pid);
    }
    let _ = client.kill();
    let _ = client.wait();
    assert!(status.success(), "memtrace: {status:?}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["lost_events"], 0, "{stderr}");

    // Every live process of the cluster, as the kernel has it.
    assert!(
        maps.iter().any(|(pid, _)| *pid == client_backend),
        "the client's backend was read"
    );
    let mut worst = 1.0f64;
    for (pid, maps) in &maps {
        let entry = process(&report, u64::from(*pid));
        let agreement = oracle::agreement(entry, maps);
        assert!(
            agreement.ratio() >= 0.999,
            "{} (pid {pid}): {:.4}% of {} bytes:\n{}",
            entry["comm"],
            agreement.ratio() * 100.0,
            agreement.mapped,
            agreement.differences
        );
        worst = worst.min(agreement.ratio());
    }

    // The backends, folded by program, all in the postmaster's cgroup: none unknown.
    let exited = report["exited"].as_array().unwrap();
    let folded: u64 = exited
        .iter()
        .map(|program| program["processes"].as_u64().unwrap())
        .sum();
    assert!(folded >= 50, "only {folded} exited processes folded");
    for program in exited {
        assert_eq!(
            program["cgroup"],
            cgroup.name.as_str(),
            "{} folded outside the postmaster's cgroup",
            program["comm"]
        );
    }
    for entry in processes(&report) {
        assert_eq!(
            entry["container"]["cgroup"],
            cgroup.name.as_str(),
            "pid {} ({}) outside the postmaster's cgroup",
            entry["pid"],
            entry["comm"]
        );
    }
    println!(
        "postgres: {} live processes' layouts (a client's backend among them) ≥ {:.4}% equal \
         to /proc/PID/maps, {folded} exited backends folded in {} programs, all in {}, 0 lost",
        maps.len(),
        worst * 100.0,
        exited.len(),
        cgroup.name
    );
}
