//! `cargo xtask vm`: run a command as root inside a Debian kernel booted under qemu.
//!
//! ```text
//! cargo xtask vm --kernel 6.1 [--env KEY=VALUE]... [--timeout SECS] -- CMD ARGS...
//! cargo xtask vm --list
//! ```
//!
//! The guest runs this machine's own root file system (shared read-only over virtio-9p, with a
//! tmpfs overlay so writes succeed and vanish at power-off), so every binary and path of the host
//! is there unchanged: CMD runs in the current directory, as root, with PATH, HOME, CI and each
//! `--env` set. /proc, /sys, /dev, bpffs, debugfs and tracefs are mounted; the
//! kernel's BTF is at /sys/kernel/btf/vmlinux. CMD's output (and the guest kernel's serious
//! messages) are printed as they come; `cargo xtask vm` exits with CMD's exit status, or fails if
//! the guest never reported one (boot failure, panic, timeout).
//!
//! Kernels are Debian's packages ([`vm_fetch::KERNELS`]), downloaded once into target/vm. Guests
//! run under TCG emulation: /dev/kvm on these machines only runs PVM guest kernels (stock Debian
//! kernels hang after "Probing EDD"). So they are slow: a boot takes 6–9 s, a trivial command
//! about 15 s, and the verifier of a large program tens of seconds. Timings taken in a guest mean
//! nothing; test behaviour there. Unlike this machine, every Debian kernel booted this way allows
//! ftrace, so fentry/fexit programs attach in the guest.
//!
//! [`run_in_guest`] is the same runner for other xtask code (the kernel matrix of `cargo xtask
//! test`).

use std::{
    ffi::OsString,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    cmd,
    vm_fetch::{self, Kernel, KERNELS},
    vm_initramfs,
    workspace::Workspace,
};

#[derive(Args)]
pub struct VmOptions {
    /// The kernel series to boot (see --list).
    #[arg(long, required_unless_present = "list")]
    kernel: Option<String>,
    /// List the kernels of the matrix and exit.
    #[arg(long)]
    list: bool,
    /// An environment variable for CMD (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Give up (and fail) if the guest has not powered off after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The command to run in the guest, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present = "list")]
    command: Vec<OsString>,
}

/// The line the guest prints after CMD, with its exit status.
const EXIT_MARKER: &str = "xtask-vm: exit status ";

/// Memory per guest: enough for the test binaries and the tmpfs overlay they write to.
const GUEST_MEMORY_MB: u32 = 2048;

pub fn vm(workspace: &Workspace, options: &VmOptions) -> Result<()> {
    if options.list {
        for kernel in &KERNELS {
            println!("{:6} {:40} {}", kernel.label, kernel.package(), kernel.why);
        }
        return Ok(());
    }
    let kernel = vm_fetch::find(options.kernel.as_deref().unwrap_or_default())?;
    crate::setup::setup(workspace, crate::setup::Purpose::Vm)?;
    let mut environment = Vec::new();
    for pair in &options.env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
        environment.push((key.to_owned(), value.to_owned()));
    }
    let guest = Guest {
        kernel,
        command: options.command.clone(),
        environment,
        timeout: Duration::from_secs(options.timeout),
        output_prefix: String::new(),
    };
    let status = run_in_guest(workspace, &guest)?.status;
    if status != 0 {
        // The guest's exit status becomes ours, as with any command runner.
        std::process::exit(status.clamp(1, 255));
    }
    Ok(())
}

/// One command to run in one guest.
pub struct Guest {
    pub kernel: &'static Kernel,
    pub command: Vec<OsString>,
    pub environment: Vec<(String, String)>,
    pub timeout: Duration,
    /// Put in front of every line of the guest's output (to tell guests apart).
    pub output_prefix: String,
}

/// What a guest's command did.
pub struct GuestRun {
    /// The command's exit status.
    pub status: i32,
    /// Every line the guest printed (its command's output and the console), as printed.
    pub output: Vec<String>,
}

/// Boots the guest's kernel, runs its command, and returns the command's exit status and
/// output. Fails if the guest did not report a status.
pub fn run_in_guest(workspace: &Workspace, guest: &Guest) -> Result<GuestRun> {
    vm_fetch::check_tools()?;
    if guest.command.is_empty() {
        bail!("no command to run in the guest");
    }
    let unpacked = vm_fetch::fetch(workspace, guest.kernel)?;
    let kernel_dir = vm_fetch::vm_dir(workspace)
        .join("kernels")
        .join(guest.kernel.package());
    let initramfs = vm_initramfs::build(&unpacked, &kernel_dir)?;
    let script = write_guest_script(workspace, guest)?;

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        .args(["-m", &GUEST_MEMORY_MB.to_string()])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&unpacked.vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(format!(
            // panic=-1 with -no-reboot: a panicking guest ends qemu instead of hanging.
            "console=ttyS0 quiet loglevel=4 panic=-1 xtask_vm_script={}",
            script.display()
        ))
        // The host's root, read-only; multidevs=remap keeps inode numbers of files from
        // different host file systems apart.
        .arg("-fsdev")
        .arg("local,id=root,path=/,security_model=none,readonly=on,multidevs=remap")
        .arg("-device")
        .arg(format!(
            "virtio-9p-pci,fsdev=root,mount_tag={}",
            vm_initramfs::ROOT_TAG
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("  + {}", cmd::describe(&qemu));
    let started = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;

    let prefix = guest.output_prefix.clone();
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let reader = thread::spawn(move || -> (Option<i32>, Vec<String>) {
        let mut status = None;
        let mut output = Vec::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            println!("{prefix}{line}");
            if let Some(value) = line.trim().strip_prefix(EXIT_MARKER) {
                status = value.trim().parse().ok();
            }
            output.push(line.to_owned());
        }
        (status, output)
    });
    let stderr = child.stderr.take().context("qemu's stderr")?;
    let prefix = guest.output_prefix.clone();
    let error_reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix}qemu: {line}");
        }
    });

    let timed_out = loop {
        if child.try_wait().context("waiting for qemu")?.is_some() {
            break false;
        }
        if started.elapsed() > guest.timeout {
            // Only our own child: qemu, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let (status, output) = reader.join().unwrap_or_default();
    let _ = error_reader.join();
    let _ = fs::remove_file(&script);
    let elapsed = started.elapsed().as_secs();
    match status {
        _ if timed_out => bail!(
            "the {} guest did not finish within {} s",
            guest.kernel.label,
            guest.timeout.as_secs()
        ),
        Some(status) => {
            cmd::step(format!(
                "{}guest {} ({}) ran the command in {elapsed} s: exit status {status}",
                guest.output_prefix,
                guest.kernel.label,
                guest.kernel.package()
            ));
            Ok(GuestRun { status, output })
        }
        None => Err(GuestDied {
            label: guest.kernel.label,
        }
        .into()),
    }
}

/// The guest's kernel stopped before the command could report its status: a panic or a
/// crash, not a failed test (those report their status).
#[derive(Debug)]
pub struct GuestDied {
    label: &'static str,
}

impl std::fmt::Display for GuestDied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} guest powered off without running the command to its end (see its console \
             output above)",
            self.label
        )
    }
}

impl std::error::Error for GuestDied {}

/// Writes the guest's second stage: mount what a system needs, run the command, report its
/// status, power off. It lives under target/vm/runs on the host, which the guest sees at the
/// same path through the shared root.
fn write_guest_script(workspace: &Workspace, guest: &Guest) -> Result<PathBuf> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let runs = vm_fetch::vm_dir(workspace).join("runs");
    fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    let path = runs.join(format!(
        "{}-{}.sh",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));

    let mut script = String::from(
        "#!/bin/sh\n\
         # The guest's PID 1 after switch_root (written by cargo xtask vm).\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /dev/pts /dev/shm\n\
         mount -t devpts devpts /dev/pts\n\
         mount -t tmpfs tmpfs /dev/shm\n\
         mount -t tmpfs tmpfs /run\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null\n\
         mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null\n\
         ip link set lo up 2>/dev/null\n",
    );
    let cwd = std::env::current_dir().context("reading the current directory")?;
    writeln!(script, "cd {}", shell_word(&cwd.display().to_string()))?;
    let mut environment: Vec<(String, String)> = ["PATH", "CI", "RUST_BACKTRACE", "TERM"]
        .iter()
        .filter_map(|key| {
            std::env::var(key)
                .ok()
                .map(|value| (key.to_string(), value))
        })
        .collect();
    environment.push(("HOME".to_owned(), "/root".to_owned()));
    environment.extend(guest.environment.iter().cloned());
    for (key, value) in &environment {
        writeln!(script, "export {key}={}", shell_word(value))?;
    }
    let words: Vec<String> = guest
        .command
        .iter()
        .map(|word| shell_word(&word.to_string_lossy()))
        .collect();
    writeln!(script, "{} </dev/null", words.join(" "))?;
    writeln!(script, "echo \"{EXIT_MARKER}$?\"")?;
    script.push_str("sync\necho o > /proc/sysrq-trigger\nsleep 10\n");
    fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A word quoted for sh.
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}
