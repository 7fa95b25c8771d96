//! How numbers read in a report: binary sizes, hex addresses, relative times.

use crate::event::Abi;

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// `512 B`, `16 MiB`, `3.54 GiB`: whole numbers stay whole, others get two decimals.
pub fn bytes(value: u64) -> String {
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && value >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    if value.is_multiple_of(scale) {
        format!("{} {}", value / scale, UNITS[unit])
    } else {
        format!("{:.2} {}", value as f64 / scale as f64, UNITS[unit])
    }
}

/// `1 region`, `16 regions`.
pub fn count(value: u64, noun: &str) -> String {
    count_of(value, noun, &format!("{noun}s"))
}

/// For nouns that do not just take an s: `2 processes`.
pub fn count_of(value: u64, singular: &str, plural: &str) -> String {
    if value == 1 {
        format!("1 {singular}")
    } else {
        format!("{value} {plural}")
    }
}

pub fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// Seconds since the session's first event: `+1.234567s`.
pub fn since(start_ns: Option<u64>, time_ns: u64) -> String {
    let elapsed = time_ns.saturating_sub(start_ns.unwrap_or(time_ns));
    format!(
        "+{}.{:06}s",
        elapsed / 1_000_000_000,
        elapsed % 1_000_000_000 / 1_000
    )
}

pub fn abi(abi: Abi) -> &'static str {
    match abi {
        Abi::X86_64 => "x86_64",
        Abi::I386 => "i386",
        Abi::Unknown => "unknown",
    }
}

/// Lines of cells with aligned columns: the columns listed in `left` left-aligned (names), the
/// others right-aligned (numbers).
pub fn table(rows: &[Vec<String>], indent: &str, left: &[usize]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(column, cell)| {
                    let width = widths[column];
                    if left.contains(&column) {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            format!("{indent}{}", cells.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(16 << 20), "16 MiB");
        assert_eq!(bytes(3_800_000_000), "3.54 GiB");
        assert_eq!(bytes(0x886000 - 0x7ac000), "872 KiB");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "region"), "1 region");
        assert_eq!(count(16, "region"), "16 regions");
        assert_eq!(count_of(2, "process", "processes"), "2 processes");
    }

    #[test]
    fn times_are_relative_to_the_session_start() {
        assert_eq!(since(Some(1_000), 1_500_001_000), "+1.500000s");
        assert_eq!(since(None, 5), "+0.000000s");
    }

    #[test]
    fn table_columns_align() {
        let rows = vec![
            vec!["kind".to_owned(), "bytes".to_owned()],
            vec!["memfd".to_owned(), "64 MiB".to_owned()],
        ];
        assert_eq!(
            table(&rows, "  ", &[0]),
            ["  kind    bytes", "  memfd  64 MiB"]
        );
    }
}
