//! How well a rebuilt layout agrees with the kernel's `/proc/PID/maps`, byte for byte: the
//! measure the container and static-binary tests hold memtrace to.

use std::collections::BTreeSet;

use serde_json::Value;

/// (perms, backing) of a byte, as both sides name it.
type Attributes = (String, String);

struct Interval {
    start: u64,
    end: u64,
    attributes: Attributes,
}

/// The same backing named the same way on both sides: /proc shows memfds as
/// `/memfd:NAME (deleted)`, anonymous memory with no name.
fn normalized_backing(name: &str) -> String {
    let name = name.trim_end_matches(" (deleted)");
    let name = name
        .strip_prefix('/')
        .filter(|n| n.starts_with("memfd:"))
        .unwrap_or(name);
    match name {
        "" | "[anon]" => String::new(),
        other => other.to_string(),
    }
}

fn kernel_layout(maps: &str) -> Vec<Interval> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_string();
            let name = fields.skip(3).collect::<Vec<_>>().join(" ");
            // The vsyscall page is not a VMA of the process; no syscall ever makes it.
            (name != "[vsyscall]").then(|| Interval {
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                attributes: (perms, normalized_backing(&name)),
            })
        })
        .collect()
}

fn rebuilt_layout(process: &Value) -> Vec<Interval> {
    process["layout"]
        .as_array()
        .expect("layout")
        .iter()
        .map(|region| Interval {
            start: region["start"].as_u64().unwrap(),
            end: region["end"].as_u64().unwrap(),
            attributes: (
                region["perms"].as_str().unwrap().to_string(),
                normalized_backing(region["name"].as_str().unwrap()),
            ),
        })
        .collect()
}

fn attributes_at(layout: &[Interval], address: u64) -> Option<&Attributes> {
    layout
        .iter()
        .find(|i| i.start <= address && address < i.end)
        .map(|i| &i.attributes)
}

/// The share of bytes mapped alike (same perms, same backing) in `maps` and in the report's
/// `layout` of `process`, over the bytes mapped on either side; and the differing ranges.
pub fn agreement(maps: &str, process: &Value) -> (f64, String) {
    let kernel = kernel_layout(maps);
    let rebuilt = rebuilt_layout(process);
    let mut cuts = BTreeSet::new();
    for interval in kernel.iter().chain(&rebuilt) {
        cuts.insert(interval.start);
        cuts.insert(interval.end);
    }
    let cuts: Vec<u64> = cuts.into_iter().collect();
    let (mut agreeing, mut union) = (0u64, 0u64);
    let mut differences = String::new();
    for window in cuts.windows(2) {
        let (start, end) = (window[0], window[1]);
        let ours = attributes_at(&rebuilt, start);
        let theirs = attributes_at(&kernel, start);
        if ours.is_none() && theirs.is_none() {
            continue;
        }
        union += end - start;
        if ours == theirs {
            agreeing += end - start;
        } else {
            differences.push_str(&format!(
                "  {start:#x}-{end:#x}: kernel {theirs:?}, memtrace {ours:?}\n"
            ));
        }
    }
    (agreeing as f64 / union.max(1) as f64, differences)
}
