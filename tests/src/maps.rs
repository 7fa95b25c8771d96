//! How well a rebuilt layout agrees with the kernel's `/proc/PID/maps`, byte for byte: the
//! measure the container and static-binary tests hold memtrace to. The comparison itself is
//! the fidelity oracle's ([`crate::oracle::agreement`]).

use serde_json::Value;

/// The share of bytes mapped alike (same perms, same backing) in `maps` and in the report's
/// `layout` of `process`, over the bytes mapped on either side; and the differing ranges.
pub fn agreement(maps: &str, process: &Value) -> (f64, String) {
    let agreement = crate::oracle::agreement(process, maps);
    (agreement.ratio(), agreement.differences)
}
