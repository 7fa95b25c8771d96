//! The kernel's own memory totals, read at each snapshot like WinDbg's `!vm`: selected
//! `/proc/meminfo` lines and every cache's active objects from `/proc/slabinfo`.

use crate::event::kernel_snapshot::{MeminfoValue, SlabCache};

/// The `/proc/meminfo` lines about kernel memory, in the order reports show them.
pub const MEMINFO_FIELDS: [&str; 7] = [
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "VmallocUsed",
    "Percpu",
    "KernelStack",
    "PageTables",
];

/// The fields of [`MEMINFO_FIELDS`] this kernel reports, in bytes.
pub fn parse_meminfo(text: &str) -> Vec<MeminfoValue> {
    let values: std::collections::HashMap<&str, u64> = text
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let mut fields = rest.split_whitespace();
            let value: u64 = fields.next()?.parse().ok()?;
            let scale = match fields.next() {
                Some("kB") => 1024,
                _ => 1,
            };
            Some((name.trim(), value * scale))
        })
        .collect();
    MEMINFO_FIELDS
        .iter()
        .filter_map(|&name| {
            Some(MeminfoValue {
                name: name.to_owned(),
                bytes: *values.get(name)?,
            })
        })
        .collect()
}

/// `/proc/slabinfo` version 2.1: a version line, a `# name ...` header, then
/// `name active_objs num_objs objsize objperslab pagesperslab : tunables ...`.
pub fn parse_slabinfo(text: &str) -> Vec<SlabCache> {
    text.lines()
        .filter(|line| !line.starts_with("slabinfo") && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?.to_owned();
            let active_objects = fields.next()?.parse().ok()?;
            let _total: u64 = fields.next()?.parse().ok()?;
            let object_size = fields.next()?.parse().ok()?;
            Some(SlabCache {
                name,
                active_objects,
                object_size,
            })
        })
        .collect()
}

/// Both files as they are now; a file that cannot be read contributes nothing (slabinfo is
/// root-only, and absent with SLOB).
pub fn read_totals() -> (Vec<MeminfoValue>, Vec<SlabCache>) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    (parse_meminfo(&meminfo), parse_slabinfo(&slabinfo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let text = "MemTotal:       16384000 kB\nSlab:             123456 kB\nSUnreclaim:        65536 kB\nPercpu:             8192 kB\nHugePages_Total:       0\n";
        let values = parse_meminfo(text);
        assert_eq!(
            values,
            vec![
                MeminfoValue {
                    name: "Slab".into(),
                    bytes: 123456 * 1024
                },
                MeminfoValue {
                    name: "SUnreclaim".into(),
                    bytes: 65536 * 1024
                },
                MeminfoValue {
                    name: "Percpu".into(),
                    bytes: 8192 * 1024
                },
            ]
        );
    }

    #[test]
    fn slabinfo_lines_give_active_objects_and_size() {
        let text = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\nkmalloc-cg-1k        800    832   1024   32    8 : tunables    0    0    0 : slabdata     26     26      0\nfilp                3000   3264    256   32    2 : tunables    0    0    0 : slabdata    102    102      0\n";
        let slabs = parse_slabinfo(text);
        assert_eq!(slabs.len(), 2);
        assert_eq!(
            slabs[0],
            SlabCache {
                name: "kmalloc-cg-1k".into(),
                active_objects: 800,
                object_size: 1024
            }
        );
    }

    #[test]
    fn the_running_kernel_reports_slab_totals() {
        let (meminfo, _) = read_totals();
        assert!(
            meminfo
                .iter()
                .any(|value| value.name == "Slab" && value.bytes > 0),
            "{meminfo:?}"
        );
    }
}
