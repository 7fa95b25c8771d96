//! Frame-pointer search for ia32 samples the CFI walk ([`super::cfi_i386`]) cannot take far:
//! its result replaces that walk's when it finds more frames.
//!
//! Code built with frame pointers keeps a chain of records on the stack: `ebp` points at
//! `[caller's ebp, return address]`. The walk follows that chain through the captured stack.
//!
//! The chain rarely starts at the syscall's own `ebp`: the syscall is made from inside libc,
//! which is built without frame pointers, and the ia32 syscall ABI passes the sixth argument in
//! `ebp` (for mmap2 the page offset, usually 0) — the kernel even rewrites the saved `ebp` with
//! it on the vDSO's sysenter path. So when `bp` does not start a plausible chain, the captured
//! stack is searched for the innermost record: libc functions that reuse `ebp` as a general
//! register must save the caller's value first (it is callee-saved), so the program's last
//! frame pointer is stored somewhere between `sp` and its record. Libc's own frames are then
//! missing from the stack (its functions keep no records), but the program's frames, which
//! decide who owns the memory, are there.

use super::{ModuleMap, StackSample, Walk};

const WORD: u64 = 4;

/// How many linked records a chain found by searching must have: one lone "record" is too
/// easily a stack slot that happens to hold a stack address next to a code address.
const MIN_SEARCHED_CHAIN: usize = 2;

/// Return addresses, innermost first (the first is the syscall's ip), at most `max_frames`.
///
/// The walk is whole when it ends at a record whose caller's frame pointer is 0 (`_start`
/// clears `ebp`); anything else cuts it short.
pub(crate) fn walk_i386(sample: &StackSample, modules: &dyn ModuleMap, max_frames: usize) -> Walk {
    let mut frames = vec![sample.ip];
    let Some(mut frame_pointer) = innermost_record(sample, modules) else {
        return Walk {
            frames,
            truncated: true,
        };
    };
    let truncated = loop {
        if frames.len() >= max_frames {
            break true;
        }
        let Some(record) = FrameRecord::read(sample, modules, frame_pointer) else {
            break true;
        };
        frames.push(record.return_address);
        // Records of callers sit higher up the stack; anything else is not a chain.
        if record.caller_frame_pointer <= frame_pointer {
            break record.caller_frame_pointer != 0;
        }
        frame_pointer = record.caller_frame_pointer;
    };
    Walk { frames, truncated }
}

/// A `[caller's frame pointer, return address]` pair at `frame_pointer` whose return address
/// points into executable file-mapped code.
struct FrameRecord {
    caller_frame_pointer: u64,
    return_address: u64,
}

impl FrameRecord {
    fn read(sample: &StackSample, modules: &dyn ModuleMap, frame_pointer: u64) -> Option<Self> {
        if !frame_pointer.is_multiple_of(WORD) {
            return None;
        }
        let record = Self {
            caller_frame_pointer: sample.read_word::<4>(frame_pointer)?,
            return_address: sample.read_word::<4>(frame_pointer + WORD)?,
        };
        is_code(modules, record.return_address).then_some(record)
    }
}

/// Whether `return_address` follows a call in executable code. It is looked up one byte back:
/// a call that ends its mapping returns to the first byte after it.
fn is_code(modules: &dyn ModuleMap, return_address: u64) -> bool {
    return_address
        .checked_sub(1)
        .and_then(|call| modules.mapping_at(call))
        .is_some_and(|mapping| mapping.executable)
}

/// How many records the chain from `frame_pointer` has, counting at most `limit`.
fn chain_length(
    sample: &StackSample,
    modules: &dyn ModuleMap,
    mut frame_pointer: u64,
    limit: usize,
) -> usize {
    let mut length = 0;
    while length < limit {
        let Some(record) = FrameRecord::read(sample, modules, frame_pointer) else {
            break;
        };
        length += 1;
        if record.caller_frame_pointer <= frame_pointer {
            break;
        }
        frame_pointer = record.caller_frame_pointer;
    }
    length
}

/// Where the chain starts: at `bp` if it holds a record, else at the lowest stack address that
/// some captured word points up to and that starts a chain of [`MIN_SEARCHED_CHAIN`] records.
fn innermost_record(sample: &StackSample, modules: &dyn ModuleMap) -> Option<u64> {
    if chain_length(sample, modules, sample.bp, 1) == 1 {
        return Some(sample.bp);
    }
    let slots = (sample.sp..sample.sp + sample.stack.len() as u64).step_by(WORD as usize);
    slots
        .filter_map(|slot| {
            let saved = sample.read_word::<4>(slot)?;
            // A saved frame pointer belongs to a caller, so it points above where it is saved.
            (saved > slot && sample.captures(saved)).then_some(saved)
        })
        .filter(|&saved| {
            chain_length(sample, modules, saved, MIN_SEARCHED_CHAIN) == MIN_SEARCHED_CHAIN
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::{MappedFile, MappedFiles, StackAbi};

    const CODE: u64 = 0x5655_6000;
    const SP: u64 = 0xffff_d000;

    fn program_code() -> MappedFiles {
        [MappedFile {
            start: CODE,
            end: CODE + 0x1000,
            file_offset: 0x1000,
            path: "/bin/program".into(),
            executable: true,
            inode: 0,
            view: crate::stacks::FileView::Host,
        }]
        .into_iter()
        .collect()
    }

    fn sample(bp: u64, words: &[u32]) -> StackSample {
        StackSample {
            abi: StackAbi::I386,
            ip: 0xf7fc_4559,
            sp: SP,
            bp,
            stack: words.iter().flat_map(|word| word.to_le_bytes()).collect(),
        }
    }

    /// A stack whose records sit at SP+0x10 (innermost), SP+0x20 and SP+0x30 (outermost,
    /// whose caller's frame pointer is 0), with the innermost frame pointer saved at SP+4.
    fn three_records() -> Vec<u32> {
        let at = |offset: u64| (SP + offset) as u32;
        let code = |offset: u64| (CODE + offset) as u32;
        vec![
            0x0,
            at(0x10), // saved by a function without frame pointer
            0x1234,
            0x0,
            at(0x20), // record 1
            code(0x111),
            0x0,
            0x0,
            at(0x30), // record 2
            code(0x222),
            0x0,
            0x0,
            0x0, // record 3: the outermost
            code(0x333),
        ]
    }

    #[test]
    fn the_chain_is_followed_from_bp() {
        let walk = walk_i386(&sample(SP + 0x10, &three_records()), &program_code(), 16);
        assert_eq!(
            walk.frames,
            [0xf7fc_4559, CODE + 0x111, CODE + 0x222, CODE + 0x333]
        );
        assert!(!walk.truncated, "the outermost record's caller is 0");
    }

    #[test]
    fn a_clobbered_bp_is_replaced_by_the_innermost_saved_frame_pointer() {
        let frames = walk_i386(&sample(0, &three_records()), &program_code(), 16).frames;
        assert_eq!(
            frames,
            [0xf7fc_4559, CODE + 0x111, CODE + 0x222, CODE + 0x333]
        );
    }

    #[test]
    fn max_frames_bounds_the_walk() {
        let walk = walk_i386(&sample(SP + 0x10, &three_records()), &program_code(), 2);
        assert_eq!(walk.frames, [0xf7fc_4559, CODE + 0x111]);
        assert!(walk.truncated);
    }

    #[test]
    fn a_lone_record_is_not_trusted_when_searching() {
        let mut words = three_records();
        words[9] = 0x10; // record 2's return address is no code: no two records chain
        let walk = walk_i386(&sample(0, &words), &program_code(), 16);
        assert_eq!(walk.frames, [0xf7fc_4559]);
        assert!(walk.truncated);
    }
}
