//! An ordered map of non-overlapping regions with the kernel's semantics for unmapping,
//! overlaying, protecting and remapping ranges.
//!
//! Regions are never merged: each keeps its own creation record, which is what the leak reports
//! are made of. [`AddressSpace::coverage`] merges for comparisons with `/proc/PID/maps`, where
//! the kernel has merged VMAs with identical properties.

use std::collections::BTreeMap;

use crate::model::region::{Perms, Region, RegionKind};

#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    /// Keyed by start address. Empty while the space is [`frozen`](Self::freeze).
    ///
    /// Boxed: regions mapped one after another (the kernel hands out addresses in order) fill
    /// the B-tree at its edge, where a full node splits into one that stays about half full
    /// for good; a slot of a whole region (96 bytes) would cost twice that, a box 8. For a
    /// million regions: 193 bytes each unboxed.
    regions: BTreeMap<u64, Box<Region>>,
    /// The regions in address order, once frozen: an exited process's layout is only read, and
    /// a B-tree node holds room for 11 regions (over 1 KiB) whether it has 1 or 11, which for a
    /// million short-lived processes is most of memtrace's memory. Any change thaws it back.
    frozen: Box<[Region]>,
}

impl PartialEq for AddressSpace {
    /// The same regions, frozen or not.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A stretch of address space with uniform permissions and backing, as `/proc/PID/maps` would
/// show it after the kernel merged its VMAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoverageEntry {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub kind: RegionKind,
    /// Empty for anonymous memory.
    pub name: String,
}

impl AddressSpace {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.regions.len() + self.frozen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Regions in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Region> + '_ {
        // One of the two is empty.
        self.frozen
            .iter()
            .chain(self.regions.values().map(|region| &**region))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Region> + '_ {
        self.frozen
            .iter_mut()
            .chain(self.regions.values_mut().map(|region| &mut **region))
    }

    /// The region containing `address`.
    pub fn region_at(&self, address: u64) -> Option<&Region> {
        let below = if self.frozen.is_empty() {
            self.regions
                .range(..=address)
                .next_back()
                .map(|(_, region)| &**region)
        } else {
            let after = self
                .frozen
                .partition_point(|region| region.start <= address);
            after.checked_sub(1).map(|index| &self.frozen[index])
        };
        below.filter(|region| region.contains(address))
    }

    /// The lowest region starting at or above `address` for which `accept` holds.
    pub fn first_from(&self, address: u64, accept: impl Fn(&Region) -> bool) -> Option<&Region> {
        let from = self.frozen.partition_point(|region| region.start < address);
        self.frozen[from..]
            .iter()
            .chain(self.regions.range(address..).map(|(_, region)| &**region))
            .find(|region| accept(region))
    }

    /// Stores the regions as a sorted slice of exactly their size, for a layout that will only
    /// be read from now on (a process's at exit).
    pub(crate) fn freeze(&mut self) {
        if self.frozen.is_empty() {
            self.frozen = std::mem::take(&mut self.regions)
                .into_values()
                .map(|region| *region)
                .collect();
        }
    }

    /// The regions as a map to change, thawed if frozen.
    fn tree(&mut self) -> &mut BTreeMap<u64, Box<Region>> {
        if !self.frozen.is_empty() {
            let frozen = std::mem::take(&mut self.frozen);
            self.regions = frozen
                .into_vec()
                .into_iter()
                .map(|region| (region.start, Box::new(region)))
                .collect();
        }
        &mut self.regions
    }

    pub fn total_bytes(&self) -> u64 {
        self.iter().map(Region::len).sum()
    }

    /// Adjacent regions with the same permissions and backing, merged.
    pub fn coverage(&self) -> Vec<CoverageEntry> {
        let mut merged: Vec<CoverageEntry> = Vec::new();
        for region in self.iter() {
            if let Some(last) = merged.last_mut() {
                if last.end == region.start
                    && last.perms == region.perms
                    && last.kind == region.kind
                    && last.name == region.name()
                {
                    last.end = region.end;
                    continue;
                }
            }
            merged.push(CoverageEntry {
                start: region.start,
                end: region.end,
                perms: region.perms,
                kind: region.kind,
                name: region.name().to_owned(),
            });
        }
        merged
    }

    /// How many mappings the kernel counts for this layout (its VMAs, the lines of
    /// `/proc/PID/maps`, what `vm.max_map_count` bounds): adjacent regions the kernel would
    /// have merged count once. Counted as [`Self::coverage`] merges, without building it.
    pub fn vma_count(&self) -> u64 {
        let mut count = 0;
        let mut previous: Option<&Region> = None;
        for region in self.iter() {
            let merges = previous.is_some_and(|last| {
                last.end == region.start
                    && last.perms == region.perms
                    && last.kind == region.kind
                    && last.name() == region.name()
            });
            if !merges {
                count += 1;
            }
            previous = Some(region);
        }
        count
    }

    /// Keeps only the regions for which `keep` holds, in a map built afresh: one that lost
    /// most of its regions gives its nodes back.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Region) -> bool) {
        let regions = std::mem::take(self.tree());
        self.regions = regions
            .into_iter()
            .filter(|(_, region)| keep(region))
            .collect();
    }

    /// Maps a region, replacing whatever it overlays (MAP_FIXED semantics; a kernel-chosen
    /// address never overlaps anything the kernel knows of, so this is right for both).
    pub(crate) fn map(&mut self, region: Region) {
        self.tree();
        if region.is_empty() {
            return;
        }
        self.unmap(region.start, region.end);
        self.regions.insert(region.start, Box::new(region));
    }

    /// Removes `[start, end)`, splitting regions that straddle either edge.
    pub(crate) fn unmap(&mut self, start: u64, end: u64) {
        self.tree();
        // The common case, a munmap of exactly what an mmap returned, is one keyed removal:
        // regions do not overlap, so nothing else lies inside.
        if self
            .regions
            .get(&start)
            .is_some_and(|region| region.end == end)
        {
            self.regions.remove(&start);
            return;
        }
        if start >= end || !self.overlaps(start, end) {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        while let Some(key) = self.first_key_in(start, end) {
            self.regions.remove(&key);
        }
    }

    /// Sets the access rights of `[start, end)`, splitting regions at the edges.
    pub(crate) fn protect(&mut self, start: u64, end: u64, prot: u64) {
        self.change(start, end, |region| {
            region.perms = region.perms.with_prot(prot)
        });
    }

    /// Sets the access rights and the protection key of `[start, end)` (`pkey_mprotect`),
    /// splitting regions at the edges.
    pub(crate) fn protect_with_key(&mut self, start: u64, end: u64, prot: u64, pkey: u32) {
        self.change(start, end, |region| {
            region.perms = region.perms.with_prot(prot);
            region.pkey = pkey;
        });
    }

    /// Seals `[start, end)` (`mseal`), splitting regions at the edges.
    pub(crate) fn seal(&mut self, start: u64, end: u64) {
        self.change(start, end, |region| region.sealed = true);
    }

    /// Whether any region of `[start, end)` is sealed.
    pub fn any_sealed(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        let from = self.region_at(start).map_or(start, |region| region.start);
        if self.frozen.is_empty() {
            self.regions
                .range(from..end)
                .any(|(_, region)| region.sealed)
        } else {
            let first = self.frozen.partition_point(|region| region.start < from);
            self.frozen[first..]
                .iter()
                .take_while(|region| region.start < end)
                .any(|region| region.sealed)
        }
    }

    /// `[start, end)` now maps its file from `offset` on (`remap_file_pages`, which the kernel
    /// emulates with a fixed mmap of the same file); splits regions at the edges.
    pub(crate) fn set_offset(&mut self, start: u64, end: u64, offset: u64) {
        self.change(start, end, |region| {
            if region.kind.has_backing_offset() {
                region.offset = offset + (region.start - start);
            }
        });
    }

    /// Unmaps what one attachment of an object mapped at `address` still maps, as `shmdt` finds
    /// it: the first region at or above `address` that `belongs` and whose offset is its
    /// distance from `address`, and every later one of the same object (name and inode) that
    /// lies where the attachment put it, so the pieces an mprotect or a partial munmap left
    /// go too. Returns the bytes unmapped (0: nothing was attached there).
    pub(crate) fn detach(&mut self, address: u64, belongs: impl Fn(&Region) -> bool) -> u64 {
        let attached_here =
            |region: &Region| region.start.checked_sub(address) == Some(region.offset);
        let Some(first) =
            self.first_from(address, |region| belongs(region) && attached_here(region))
        else {
            return 0;
        };
        let (name, inode) = (first.name.clone(), first.inode);
        let pieces: Vec<(u64, u64)> = self
            .iter()
            .filter(|region| {
                region.start >= address
                    && belongs(region)
                    && attached_here(region)
                    && region.inode == inode
                    && region.name == name
            })
            .map(|region| (region.start, region.end))
            .collect();
        let mut unmapped = 0;
        for (start, end) in pieces {
            self.unmap(start, end);
            unmapped += end - start;
        }
        unmapped
    }

    /// Applies `change` to every region of `[start, end)`, splitting regions at the edges.
    fn change(&mut self, start: u64, end: u64, mut change: impl FnMut(&mut Region)) {
        self.tree();
        if start >= end || !self.overlaps(start, end) {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        for region in self.regions.range_mut(start..end).map(|(_, region)| region) {
            change(region);
        }
    }

    /// Removes `[start, end)` and returns the pieces that were there, in address order.
    pub(crate) fn take(&mut self, start: u64, end: u64) -> Vec<Region> {
        self.tree();
        let mut pieces = Vec::new();
        if start >= end || !self.overlaps(start, end) {
            return pieces;
        }
        self.split_at(start);
        self.split_at(end);
        while let Some(key) = self.first_key_in(start, end) {
            pieces.extend(self.regions.remove(&key).map(|piece| *piece));
        }
        pieces
    }

    /// Moves the region ending at `end` so that it ends at `new_end` (growing a mapping in
    /// place: mremap, brk). Returns false when no region ends exactly at `end` or it does not
    /// satisfy `accept`.
    pub(crate) fn grow_region_ending_at(
        &mut self,
        end: u64,
        new_end: u64,
        accept: impl Fn(&Region) -> bool,
    ) -> bool {
        self.tree();
        if new_end <= end {
            return false;
        }
        let key = match self.regions.range(..end).next_back() {
            Some((&key, region)) if region.end == end && accept(region) => key,
            _ => return false,
        };
        self.unmap(end, new_end);
        if let Some(region) = self.regions.get_mut(&key) {
            region.end = new_end;
        }
        true
    }

    /// mremap: resizes in place or moves `[old_start, old_start + old_len)` to
    /// `[new_start, new_start + new_len)`; lengths page-aligned. The moved pieces keep their
    /// permissions, backing, names and creation records; growth extends the last piece.
    /// With `keep_old` (MREMAP_DONTUNMAP) the old range stays mapped as it was: for the private
    /// anonymous memory this is meant for, that is anonymous memory whose pages moved away.
    /// Returns the part of the new range the model could not fill because it knew nothing at
    /// the old address, so the caller can account for it another way.
    pub(crate) fn remap(
        &mut self,
        old_start: u64,
        old_len: u64,
        new_start: u64,
        new_len: u64,
        keep_old: bool,
    ) -> Option<(u64, u64)> {
        self.tree();
        let old_end = old_start.saturating_add(old_len);
        let new_end = new_start.saturating_add(new_len);
        if old_len == 0 {
            // A second mapping of the same shared pages; the old one stays.
            return (!self.duplicate(old_start, new_start, new_end))
                .then_some((new_start, new_end));
        }
        if new_start == old_start {
            if new_len <= old_len {
                self.unmap(new_end, old_end);
                return None;
            }
            self.split_at(old_end);
            let grown = self.grow_region_ending_at(old_end, new_end, |_| true);
            return (!grown).then_some((old_end, new_end));
        }
        let moved_end = old_start.saturating_add(old_len.min(new_len));
        let pieces = self.take(old_start, moved_end);
        if keep_old {
            for piece in &pieces {
                self.regions.insert(piece.start, Box::new(piece.clone()));
            }
        } else {
            // Shrinking while moving gives the tail back.
            self.unmap(moved_end, old_end);
        }
        if pieces.is_empty() {
            return Some((new_start, new_end));
        }
        self.unmap(new_start, new_end);
        let last = pieces.len() - 1;
        for (index, mut piece) in pieces.into_iter().enumerate() {
            let relative_start = piece.start - old_start;
            let len = if index == last {
                new_len - relative_start
            } else {
                piece.len()
            };
            piece.start = new_start + relative_start;
            piece.end = piece.start + len;
            self.regions.insert(piece.start, Box::new(piece));
        }
        None
    }

    /// Maps `[new_start, new_end)` to the same backing as the region at `source`.
    fn duplicate(&mut self, source: u64, new_start: u64, new_end: u64) -> bool {
        let Some(original) = self.region_at(source) else {
            return false;
        };
        let mut copy = original.clone();
        if copy.kind.has_backing_offset() {
            copy.offset += source - copy.start;
        }
        copy.start = new_start;
        copy.end = new_end;
        self.map(copy);
        true
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.regions
            .range(..end)
            .next_back()
            .is_some_and(|(_, region)| region.end > start)
    }

    fn first_key_in(&self, start: u64, end: u64) -> Option<u64> {
        self.regions.range(start..end).next().map(|(&key, _)| key)
    }

    /// Makes `address` a region boundary if it falls inside a region.
    fn split_at(&mut self, address: u64) {
        let Some((&start, region)) = self.regions.range_mut(..address).next_back() else {
            return;
        };
        if region.end <= address {
            return;
        }
        let mut tail = region.clone();
        region.end = address;
        tail.start = address;
        if tail.kind.has_backing_offset() {
            tail.offset += address - start;
        }
        self.regions.insert(address, tail);
    }
}
