//! The body of a kernel-mode snapshot event (extended kind 2): varints and length-prefixed
//! strings like every other body, counts first so a corrupt count is caught against the bytes
//! that remain instead of becoming an allocation.

use bytes::BufMut;

use super::wire::{get_string, get_u8, get_uvarint, put_str, put_uvarint, Malformed};
use crate::event::kernel_snapshot::{
    KernelCounters, KernelGroup, KernelModeSource, KernelSnapshot, MeminfoValue, SlabCache,
};

pub(crate) fn encode(record: &KernelSnapshot, buf: &mut impl BufMut) {
    let counters = &record.counters;
    for value in [
        counters.allocs,
        counters.frees,
        counters.table_full,
        counters.stack_lost,
        counters.sites_full,
    ] {
        put_uvarint(buf, value);
    }
    put_uvarint(buf, record.meminfo.len() as u64);
    for value in &record.meminfo {
        put_str(buf, &value.name);
        put_uvarint(buf, value.bytes);
    }
    put_uvarint(buf, record.slabs.len() as u64);
    for slab in &record.slabs {
        put_str(buf, &slab.name);
        put_uvarint(buf, slab.active_objects);
        put_uvarint(buf, slab.object_size);
    }
    put_uvarint(buf, record.groups.len() as u64);
    for group in &record.groups {
        buf.put_u8(group.source as u8);
        put_uvarint(buf, group.call_site);
        put_str(buf, &group.function);
        put_str(buf, &group.module);
        put_str(buf, &group.cache);
        put_uvarint(buf, group.count);
        put_uvarint(buf, group.bytes);
        put_uvarint(buf, group.stack.len() as u64);
        for frame in &group.stack {
            put_str(buf, frame);
        }
    }
}

/// A count of items that take at least `min_len` bytes each, checked against what is left.
fn get_count(buf: &mut &[u8], min_len: usize) -> Result<usize, Malformed> {
    let count = get_uvarint(buf)?;
    if count > (buf.len() / min_len) as u64 {
        return Err(Malformed(
            "a kernel snapshot claims more items than its frame holds",
        ));
    }
    Ok(count as usize)
}

pub(crate) fn decode(buf: &mut &[u8]) -> Result<KernelSnapshot, Malformed> {
    let counters = KernelCounters {
        allocs: get_uvarint(buf)?,
        frees: get_uvarint(buf)?,
        table_full: get_uvarint(buf)?,
        stack_lost: get_uvarint(buf)?,
        sites_full: get_uvarint(buf)?,
    };
    let mut meminfo = Vec::new();
    for _ in 0..get_count(buf, 2)? {
        meminfo.push(MeminfoValue {
            name: get_string(buf)?,
            bytes: get_uvarint(buf)?,
        });
    }
    let mut slabs = Vec::new();
    for _ in 0..get_count(buf, 3)? {
        slabs.push(SlabCache {
            name: get_string(buf)?,
            active_objects: get_uvarint(buf)?,
            object_size: get_uvarint(buf)?,
        });
    }
    let mut groups = Vec::new();
    // source, call site, three strings, count, bytes, stack length: a byte each at least.
    for _ in 0..get_count(buf, 8)? {
        let source = KernelModeSource::from_u32(get_u8(buf)?.into())
            .ok_or(Malformed("a kernel allocation has an unknown source"))?;
        let call_site = get_uvarint(buf)?;
        let function = get_string(buf)?;
        let module = get_string(buf)?;
        let cache = get_string(buf)?;
        let count = get_uvarint(buf)?;
        let bytes = get_uvarint(buf)?;
        let mut stack = Vec::new();
        for _ in 0..get_count(buf, 1)? {
            stack.push(get_string(buf)?);
        }
        groups.push(KernelGroup {
            source,
            call_site,
            function,
            module,
            cache,
            count,
            bytes,
            stack,
        });
    }
    Ok(KernelSnapshot {
        groups,
        counters,
        meminfo,
        slabs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KernelSnapshot {
        KernelSnapshot {
            groups: vec![KernelGroup {
                source: KernelModeSource::Kmalloc,
                call_site: 0xffff_ffff_8123_4567,
                function: "alloc_pipe_info+0x4d".into(),
                module: String::new(),
                cache: "kmalloc-1k".into(),
                count: 1000,
                bytes: 1_024_000,
                stack: vec![
                    "alloc_pipe_info+0x4d".into(),
                    "create_pipe_files+0x3a".into(),
                ],
            }],
            counters: KernelCounters {
                allocs: 5,
                frees: 4,
                table_full: 3,
                stack_lost: 2,
                sites_full: 1,
            },
            meminfo: vec![MeminfoValue {
                name: "Slab".into(),
                bytes: 123 << 10,
            }],
            slabs: vec![SlabCache {
                name: "filp".into(),
                active_objects: 4000,
                object_size: 256,
            }],
        }
    }

    #[test]
    fn a_snapshot_round_trips() {
        let record = sample();
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        let mut cursor = bytes.as_slice();
        assert_eq!(decode(&mut cursor).unwrap(), record);
        assert!(cursor.is_empty());
    }

    #[test]
    fn every_truncation_is_malformed_not_a_panic() {
        let mut bytes = Vec::new();
        encode(&sample(), &mut bytes);
        for len in 0..bytes.len() {
            let mut cursor = &bytes[..len];
            assert!(decode(&mut cursor).is_err(), "cut at {len}");
        }
    }
}
