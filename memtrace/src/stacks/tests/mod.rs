//! Real stacks: the leaker (testdata/leaker.c) is built with gcc at test time, stopped by ptrace
//! at the mmap its malloc makes inside libc, unwound and symbolized.

pub(super) mod programs;
mod tracee;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use programs::{build_leaker, file_offset_of_function, leaker_line, TempDir};
use tracee::{capture_large_mmap, Capture};

use super::{
    modules::ModuleKey, symbolize_stack, vdso::VDSO_NAME, Frame, ModuleCache, StackAbi, Symbolizer,
    Unwinder,
};

const MAX_FRAMES: usize = 64;

/// Unwinds and symbolizes the sample, and prints the stack (shown with --nocapture).
fn symbolized_stack(build: &str, capture: &Capture, symbolizer: &mut Symbolizer) -> Vec<Frame> {
    let mut unwinder = Unwinder::new();
    let addresses = unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES);
    let frames = symbolize_stack(symbolizer, &addresses, &capture.modules);
    // The same sample unwinds the same way from the unwinder's caches.
    assert_eq!(
        unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES),
        addresses
    );
    eprintln!(
        "{build}: ip={:#x} sp={:#x} bp={:#x}, {} stack bytes",
        capture.sample.ip,
        capture.sample.sp,
        capture.sample.bp,
        capture.sample.stack.len()
    );
    for (index, frame) in frames.iter().enumerate() {
        eprintln!("  #{index:<2} {:#014x} {frame}", frame.address);
    }
    frames
}

/// The index of the first frame at or after `from` that names `function`.
fn position(frames: &[Frame], from: usize, function: &str) -> Option<usize> {
    frames[from..]
        .iter()
        .position(|frame| frame.function.as_deref() == Some(function))
        .map(|offset| from + offset)
}

/// Asserts that `functions` appear in this order (not necessarily adjacent); returns their
/// positions.
fn assert_in_order(frames: &[Frame], functions: &[&str]) -> Vec<usize> {
    let mut positions = Vec::new();
    let mut from = 0;
    for function in functions {
        let found = position(frames, from, function)
            .unwrap_or_else(|| panic!("{function} after frame {from} in {frames:#?}"));
        positions.push(found);
        from = found + 1;
    }
    positions
}

fn is_libc(frame: &Frame) -> bool {
    frame.module.as_deref().is_some_and(|module| {
        module
            .rsplit('/')
            .next()
            .unwrap_or("")
            .starts_with("libc.so")
    })
}

/// The whole issue for one build: the program's frames with their call lines, under libc's
/// frames, which come first (the syscall is made inside libc; a 32-bit one from the vDSO's
/// `__kernel_vsyscall`, which libc calls).
fn assert_leak_stack(build: &str, abi: StackAbi, flags: &[&str]) {
    let dir = TempDir::new(build);
    let binary = build_leaker(&dir, "leaker", flags);
    let capture = capture_large_mmap(&binary, abi);
    let frames = symbolized_stack(build, &capture, &mut Symbolizer::new());

    let positions = assert_in_order(&frames, &["hx_alloc_tmp", "process_image", "main"]);
    let in_libc = match abi {
        StackAbi::X86_64 => 0,
        StackAbi::I386 => {
            assert_eq!(frames[0].module.as_deref(), Some(VDSO_NAME), "{frames:#?}");
            1
        }
    };
    assert!(
        is_libc(&frames[in_libc]),
        "the syscall is made in libc: {frames:#?}"
    );
    let libc_names = [
        "malloc",
        "mmap",
        "__mmap",
        "mmap64",
        "sysmalloc",
        "_int_malloc",
    ];
    assert!(
        frames[..positions[0]].iter().any(|frame| is_libc(frame)
            && frame
                .function
                .as_deref()
                .is_some_and(|name| libc_names.contains(&name))),
        "a named libc frame before hx_alloc_tmp: {frames:#?}"
    );
    // Return addresses are looked up inside their call: each frame names its call's line.
    let expected_lines = [
        leaker_line("malloc(bytes)"),
        leaker_line("hx_alloc_tmp(TMP_BYTES)"),
        leaker_line("process_image(argc)"),
    ];
    for (&index, line) in positions.iter().zip(expected_lines) {
        let frame = &frames[index];
        assert!(
            frame
                .file
                .as_deref()
                .is_some_and(|file| file.ends_with("leaker.c")),
            "{frame:?}"
        );
        assert_eq!(frame.line, Some(line), "{frame:?}");
        assert_eq!(frame.module.as_deref(), binary.to_str());
    }
    // The walk is whole: main's caller in libc, and _start, whose CFI ends the stack.
    let walk = Unwinder::new().walk(&capture.sample, &capture.modules, MAX_FRAMES);
    assert!(!walk.truncated, "{frames:#?}");
    assert!(is_libc(&frames[positions[2] + 1]), "{frames:#?}");

    // Without libc's separate debug file (libc6-dbg), its exported functions are still named
    // from .dynsym, under their public names.
    let no_debug_files = dir.path().join("no-debug-files");
    let mut symbolizer = Symbolizer::with_debug_directory(no_debug_files);
    let frames = symbolized_stack(
        &format!("{build}, no debug files"),
        &capture,
        &mut symbolizer,
    );
    if abi == StackAbi::X86_64 {
        assert_eq!(frames[0].function.as_deref(), Some("mmap"), "{frames:#?}");
    }
    assert_in_order(
        &frames,
        &["mmap", "malloc", "hx_alloc_tmp", "process_image", "main"],
    );
}

#[test]
fn x86_64_unwinds_through_glibc_without_frame_pointers_anywhere() {
    assert_leak_stack("omit-fp", StackAbi::X86_64, &["-fomit-frame-pointer"]);
}

#[test]
fn x86_64_unwinds_through_glibc_into_a_frame_pointer_program() {
    assert_leak_stack("keep-fp", StackAbi::X86_64, &["-fno-omit-frame-pointer"]);
}

/// By the CFI of the vDSO (read from the tracee), of glibc and of the program: gcc gives
/// an ia32 `main` a CFA expression (it realigns the stack), which is evaluated too.
#[test]
fn i386_unwinds_through_the_vdso_and_glibc_without_frame_pointers() {
    assert_leak_stack(
        "i386-omit-fp",
        StackAbi::I386,
        &["-m32", "-fomit-frame-pointer"],
    );
}

#[test]
fn i386_unwinds_through_the_vdso_and_glibc_into_a_frame_pointer_program() {
    assert_leak_stack(
        "i386-keep-fp",
        StackAbi::I386,
        &["-m32", "-fno-omit-frame-pointer"],
    );
}

#[test]
fn max_frames_bounds_the_stack() {
    let dir = TempDir::new("max-frames");
    let binary = build_leaker(&dir, "leaker", &["-fomit-frame-pointer"]);
    let capture = capture_large_mmap(&binary, StackAbi::X86_64);
    let mut unwinder = Unwinder::new();
    assert_eq!(
        unwinder.unwind(&capture.sample, &capture.modules, 0),
        Vec::<u64>::new()
    );
    assert_eq!(
        unwinder.unwind(&capture.sample, &capture.modules, 2),
        unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES)[..2]
    );
}

/// A walk that reaches `_start` is whole; one stopped by `max_frames` or by the end of the
/// captured bytes says it was cut short.
#[test]
fn a_stack_cut_short_says_so() {
    let dir = TempDir::new("truncated");
    let binary = build_leaker(&dir, "leaker", &["-fomit-frame-pointer"]);
    let capture = capture_large_mmap(&binary, StackAbi::X86_64);
    let mut unwinder = Unwinder::new();
    let whole = unwinder.walk(&capture.sample, &capture.modules, MAX_FRAMES);
    assert!(!whole.truncated, "{whole:x?}");
    assert!(
        unwinder
            .walk(&capture.sample, &capture.modules, 2)
            .truncated
    );
    let mut short = capture.sample.clone();
    short.stack.truncate(64);
    let cut = unwinder.walk(&short, &capture.modules, MAX_FRAMES);
    assert!(cut.truncated, "{cut:x?}");
    assert!(cut.frames.len() < whole.frames.len());
}

/// A program deleted after the unwinder first read it (an upgrade under a running process)
/// still unwinds from the cache; without it, its frames would have no CFI.
#[test]
fn the_unwinder_keeps_modules_deleted_after_first_sight() {
    let dir = TempDir::new("deleted");
    let binary = build_leaker(&dir, "leaker", &["-fomit-frame-pointer"]);
    let capture = capture_large_mmap(&binary, StackAbi::X86_64);
    let mut unwinder = Unwinder::new();
    let before = unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES);
    let program = binary.to_str().unwrap();
    let build_id = Symbolizer::new().build_id(program);
    assert!(build_id.is_some());
    assert_eq!(unwinder.module_build_id(program), build_id.as_deref());

    fs::remove_file(&binary).unwrap();
    assert_eq!(
        unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES),
        before
    );
    let unread = Unwinder::new().unwind(&capture.sample, &capture.modules, MAX_FRAMES);
    assert!(
        unread.len() < before.len(),
        "without the program's CFI the walk stops in it: {unread:x?} vs {before:x?}"
    );
}

/// The unwinder and the symbolizer share one cache of opened modules: a module the unwinder
/// read is named by the symbolizer from that very read, even once the file is gone (a
/// symbolizer of its own would have nothing to read then).
#[test]
fn the_symbolizer_names_frames_from_the_files_the_unwinder_read() {
    let dir = TempDir::new("shared-modules");
    let binary = build_leaker(&dir, "leaker", &["-fomit-frame-pointer"]);
    let offset = file_offset_of_function(&binary, "process_image");
    let capture = capture_large_mmap(&binary, StackAbi::X86_64);
    let modules = ModuleCache::new().shared();
    let mut unwinder = Unwinder::with_modules(modules.clone());
    let mut symbolizer = Symbolizer::with_modules(modules);
    unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES);
    let program = binary.to_str().unwrap();
    let build_id = unwinder
        .module_build_id(program)
        .expect("gcc writes a build-id")
        .to_vec();

    fs::remove_file(&binary).unwrap();
    let named = symbolizer.symbolize_inlined(program, Some(&build_id), offset);
    assert_eq!(named[0].function.as_deref(), Some("process_image"));
    let alone = Symbolizer::new().symbolize_inlined(program, Some(&build_id), offset);
    assert_eq!(alone[0].function, None, "nothing left to read: {alone:?}");
}

#[test]
fn a_missing_module_is_named_by_module_and_offset_only() {
    let mut symbolizer = Symbolizer::new();
    let frame = symbolizer.symbolize("/nonexistent/memtrace/libgone.so", 0x1234);
    assert_eq!(
        frame.module.as_deref(),
        Some("/nonexistent/memtrace/libgone.so")
    );
    assert_eq!(frame.module_offset, Some(0x1234));
    assert_eq!((frame.function, frame.file, frame.line), (None, None, None));
    assert_eq!(
        symbolizer.build_id("/nonexistent/memtrace/libgone.so"),
        None
    );
}

/// A module replaced on disk by another build keeps the names of the build first seen at its
/// path; the new build is used only when asked for by its build-id.
#[test]
fn a_replaced_module_keeps_the_build_seen_first() {
    let dir = TempDir::new("replaced");
    let first = build_leaker(&dir, "first", &["-fomit-frame-pointer"]);
    let second = build_leaker(&dir, "second", &["-fomit-frame-pointer", "-DOTHER_BUILD"]);
    let first_offset = file_offset_of_function(&first, "process_image");
    let second_offset = file_offset_of_function(&second, "other_build_only");

    let module = dir.path().join("libimaging.so");
    let module_path = module.to_str().unwrap();
    fs::copy(&first, &module).unwrap();
    let mut symbolizer = Symbolizer::new();
    let seen = symbolizer.symbolize(module_path, first_offset);
    assert_eq!(seen.function.as_deref(), Some("process_image"));
    let first_id = symbolizer
        .build_id(module_path)
        .expect("gcc writes a build-id");

    // Overwritten in place (same inode), as `cp` does.
    fs::copy(&second, &module).unwrap();
    let mut fresh = Symbolizer::new();
    let second_id = fresh.build_id(module_path).expect("gcc writes a build-id");
    assert_ne!(first_id, second_id);

    let again = symbolizer.symbolize(module_path, first_offset);
    assert_eq!(
        again, seen,
        "the path still answers with the build seen first"
    );
    assert_eq!(symbolizer.build_id(module_path), Some(first_id.clone()));
    let by_first_id = symbolizer.symbolize_inlined(module_path, Some(&first_id), first_offset);
    assert_eq!(by_first_id, [seen]);
    let by_second_id = symbolizer.symbolize_inlined(module_path, Some(&second_id), second_offset);
    assert_eq!(
        by_second_id[0].function.as_deref(),
        Some("other_build_only")
    );

    // Another build than the file holds, and never seen: module and offset only.
    let unknown_id = [0xab; 20];
    let unknown = symbolizer.symbolize_inlined(module_path, Some(&unknown_id), first_offset);
    assert_eq!(unknown[0].function, None);
    assert_eq!(unknown[0].module_offset, Some(first_offset));

    // Deleted: the builds already read still answer, nothing else does.
    fs::remove_file(&module).unwrap();
    assert_eq!(
        symbolizer
            .symbolize(module_path, first_offset)
            .function
            .as_deref(),
        Some("process_image")
    );
    assert_eq!(
        Symbolizer::new()
            .symbolize(module_path, first_offset)
            .function,
        None
    );
}

/// A module's DWARF is parsed when one of its frames is first named, not when the unwinder
/// reads the module: in a live session, not while the rings are mapped.
#[test]
fn dwarf_waits_for_the_first_name() {
    let dir = TempDir::new("dwarf-deferred");
    let binary = build_leaker(&dir, "leaker", &["-fomit-frame-pointer"]);
    let offset = file_offset_of_function(&binary, "process_image");
    let capture = capture_large_mmap(&binary, StackAbi::X86_64);
    let modules = ModuleCache::new().shared();
    let mut unwinder = Unwinder::with_modules(modules.clone());
    let mut symbolizer = Symbolizer::with_modules(modules.clone());
    unwinder.unwind(&capture.sample, &capture.modules, MAX_FRAMES);
    let program = binary.to_str().unwrap();
    let build_id = unwinder.module_build_id(program).unwrap().to_vec();
    let module = || {
        modules
            .borrow()
            .build(&ModuleKey::BuildId(build_id.clone()))
            .expect("the unwinder read the program")
    };
    assert!(!module().symbols.dwarf_read());

    let named = symbolizer.symbolize_inlined(program, Some(&build_id), offset);
    assert!(module().symbols.dwarf_read());
    assert_eq!(named[0].function.as_deref(), Some("process_image"));
    assert!(
        named[0]
            .file
            .as_deref()
            .is_some_and(|file| file.ends_with("leaker.c")),
        "{named:?}"
    );
}

/// Splits `binary`'s debug information into `debug_directory/.build-id/xx/yyyy.debug`, as
/// distributions ship it, and returns that path.
fn split_debug_info(binary: &Path, build_id: &[u8], debug_directory: &Path) -> PathBuf {
    let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
    let debug_file = debug_directory
        .join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]));
    fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("objcopy").args(args).status().unwrap();
        assert!(status.success(), "objcopy {args:?}");
    };
    objcopy(&[
        "--only-keep-debug".as_ref(),
        binary.as_os_str(),
        debug_file.as_os_str(),
    ]);
    objcopy(&["--strip-debug".as_ref(), binary.as_os_str()]);
    debug_file
}

/// A separate debug file is read when a frame is first named and checked then: the one of the
/// build first seen names file and line; one replaced meanwhile by another build's gives the
/// symbol table's name and no file or line, never the other build's.
#[test]
fn a_debug_file_is_checked_when_it_is_read() {
    let dir = TempDir::new("debug-file");
    let debug_directory = dir.path().join("debug");
    let first = build_leaker(&dir, "first", &["-fomit-frame-pointer"]);
    let other = build_leaker(&dir, "other", &["-fomit-frame-pointer", "-DOTHER_BUILD"]);
    let offset = file_offset_of_function(&first, "process_image");
    let id_of = |binary: &Path| {
        Symbolizer::new()
            .build_id(binary.to_str().unwrap())
            .unwrap()
    };
    let (first_id, other_id) = (id_of(&first), id_of(&other));
    assert_ne!(first_id, other_id);
    let debug_file = split_debug_info(&first, &first_id, &debug_directory);
    let other_debug = split_debug_info(&other, &other_id, &dir.path().join("other-debug"));
    let module = first.to_str().unwrap();

    // Read now, named later: the debug file still holds the same build.
    let mut symbolizer = Symbolizer::with_debug_directory(&debug_directory);
    assert_eq!(symbolizer.build_id(module), Some(first_id.clone()));
    let named = symbolizer.symbolize(module, offset);
    assert_eq!(named.function.as_deref(), Some("process_image"));
    assert!(
        named
            .file
            .as_deref()
            .is_some_and(|file| file.ends_with("leaker.c")),
        "{named:?}"
    );

    // Read now, and the debug file replaced by another build's before the first name.
    let mut symbolizer = Symbolizer::with_debug_directory(&debug_directory);
    assert_eq!(symbolizer.build_id(module), Some(first_id));
    fs::copy(&other_debug, &debug_file).unwrap();
    let named = symbolizer.symbolize(module, offset);
    assert_eq!(
        named.function.as_deref(),
        Some("process_image"),
        "{named:?}"
    );
    assert_eq!((named.file, named.line), (None, None));
}
