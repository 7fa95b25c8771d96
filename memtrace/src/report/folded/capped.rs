//! A map bounded in its keys, for sums whose keys come from the traced programs.

use std::collections::BTreeMap;

use super::MAX_ENTRIES;

/// A map that tells at most [`MAX_ENTRIES`] keys apart and sums the values of any more in one
/// entry: what a program's processes created is bounded by their code, not by how many ran,
/// but a program mapping a fresh temporary file each time would otherwise grow without end.
#[derive(Debug)]
pub(super) struct Capped<K, V> {
    entries: BTreeMap<K, V>,
    other: Option<V>,
}

impl<K, V> Default for Capped<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            other: None,
        }
    }
}

/// A value [`Capped`] sums.
pub(super) trait Sum {
    fn add(&mut self, other: Self);
}

impl<K: Ord, V: Sum> Capped<K, V> {
    pub(super) fn add(&mut self, key: K, value: V) {
        if let Some(sum) = self.entries.get_mut(&key) {
            sum.add(value);
        } else if self.entries.len() < MAX_ENTRIES {
            self.entries.insert(key, value);
        } else {
            match &mut self.other {
                Some(sum) => sum.add(value),
                None => self.other = Some(value),
            }
        }
    }

    /// Each entry, then the sum of the rest (key `None`).
    pub(super) fn iter(&self) -> impl Iterator<Item = (Option<&K>, &V)> + '_ {
        self.entries
            .iter()
            .map(|(key, value)| (Some(key), value))
            .chain(self.other.iter().map(|value| (None, value)))
    }
}
