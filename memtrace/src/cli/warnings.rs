//! How memtrace's log lines (`log::warn!` and the like) reach stderr: escaped, and limited.
//!
//! Their text often carries what the traced programs control (a comm, an executable's path),
//! so every line goes through [`crate::escape::terminal`], the rule every other text output
//! follows. And a program can repeat what makes a warning (an exec a second, each with a
//! layout that cannot be rebuilt): each place in memtrace that warns prints its first
//! [`SHOWN_PER_SITE`] lines, then only counts, and [`print_suppressed`] says at the end how
//! many were not shown.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Mutex, OnceLock},
};

/// Lines shown per place that warns, before the rest are only counted.
pub const SHOWN_PER_SITE: u64 = 10;

/// Per place that logs (file and line): lines logged, and the first one, for the summary.
type Sites = HashMap<(String, u32), (u64, String)>;

fn sites() -> &'static Mutex<Sites> {
    static SITES: OnceLock<Mutex<Sites>> = OnceLock::new();
    SITES.get_or_init(Default::default)
}

/// memtrace's logger: `default_filter` unless `RUST_LOG` says otherwise.
pub fn init(default_filter: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .format(|out, record| {
            let message = record.args().to_string();
            // Debug output (--ebpf-log) is asked for line by line: never limited.
            if record.level() <= log::Level::Warn {
                let site = (
                    record.file().unwrap_or_else(|| record.target()).to_owned(),
                    record.line().unwrap_or(0),
                );
                let mut sites = sites().lock().unwrap_or_else(|e| e.into_inner());
                let (count, _) = sites.entry(site).or_insert_with(|| (0, message.clone()));
                *count += 1;
                if *count > SHOWN_PER_SITE {
                    return Ok(());
                }
            }
            writeln!(
                out,
                "[{:<5} {}] {}",
                record.level(),
                record.target(),
                crate::escape::terminal(&message)
            )
        })
        .init();
}

/// One line per place whose warnings were not all shown: how many were not, and the first.
pub fn print_suppressed() {
    let sites = sites().lock().unwrap_or_else(|e| e.into_inner());
    let mut suppressed: Vec<&(u64, String)> = sites
        .values()
        .filter(|(count, _)| *count > SHOWN_PER_SITE)
        .collect();
    suppressed.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
    for (count, first) in suppressed {
        let mut first = crate::escape::terminal(first).into_owned();
        if first.chars().count() > 120 {
            first = first.chars().take(120).collect::<String>() + "…";
        }
        eprintln!(
            "memtrace: {} more warnings like the {SHOWN_PER_SITE} above not shown ({count} in all; the first: {first})",
            count - SHOWN_PER_SITE
        );
    }
}
