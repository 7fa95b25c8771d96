//! Unreleased memory grouped by the call stack that allocated it, so the leaking call site
//! stands at the top with its count and bytes (`6 × 16 MiB = 96 MiB  hx_alloc_tmp ←
//! process_image ← main (bigalloc.c:9)`).

use std::collections::BTreeMap;

use crate::model::{ProcessView, RegionKind};
use crate::report::format;
use crate::report::schema::{AllocatedSite, CallSiteGroup, FrameReport, SizeGroup};
use crate::stacks::vdso::VDSO_NAME;

/// Names a frame from its module and file offset. Reports stay free of I/O: the caller
/// decides how names are found (symbol files on this machine) or that they are not.
pub trait FrameNamer {
    /// `build_id`: the build the stack ran through, when known; a namer must not name the
    /// frame from a different build.
    fn name(&mut self, module: &str, build_id: Option<&[u8]>, file_offset: u64) -> FrameName;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameName {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Names nothing: frames show as module+offset.
pub struct NoNames;

impl FrameNamer for NoNames {
    fn name(&mut self, _module: &str, _build_id: Option<&[u8]>, _file_offset: u64) -> FrameName {
        FrameName::default()
    }
}

/// Frames shown in a one-line call site.
const CALL_SITE_FRAMES: usize = 4;

pub(crate) fn unreleased_by_stack(
    view: &ProcessView<'_>,
    since_ns: u64,
    namer: &mut dyn FrameNamer,
) -> Vec<CallSiteGroup> {
    type Site = (u64, BTreeMap<u64, u64>, Vec<&'static str>);
    let mut by_stack: BTreeMap<&[u64], Site> = BTreeMap::new();
    for region in view
        .unreleased()
        .filter(|region| region.created.time_ns >= since_ns)
    {
        let frames = view.stack_frames(region);
        if frames.is_empty() {
            continue;
        }
        let (bytes, sizes, kinds) = by_stack.entry(frames).or_default();
        *bytes += region.len();
        if !kinds.contains(&region.kind.as_str()) {
            kinds.push(region.kind.as_str());
        }
        *sizes.entry(region.len()).or_default() += 1;
    }
    let mut groups: Vec<CallSiteGroup> = by_stack
        .into_iter()
        .map(|(frames, (bytes, sizes, kinds))| {
            let truncated = view.stack_truncated(frames);
            let frames = frame_reports(view, frames, namer);
            let sizes = SizeGroup::from_counts(sizes);
            CallSiteGroup {
                truncated,
                count: sizes.iter().map(|s| s.count).sum(),
                bytes,
                call_site: call_site(&frames),
                kinds,
                sizes,
                frames,
            }
        })
        .collect();
    groups.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
    groups
}

/// A stack's frames, named, innermost first.
fn frame_reports(
    view: &ProcessView<'_>,
    frames: &[u64],
    namer: &mut dyn FrameNamer,
) -> Vec<FrameReport> {
    frames
        .iter()
        .enumerate()
        .map(|(depth, &address)| frame_report(view, depth, address, namer))
        .collect()
}

/// The one-line call site of a stack's frames (`hx_alloc_tmp ← process_image ← main`).
pub(crate) fn call_site_of(
    view: &ProcessView<'_>,
    frames: &[u64],
    namer: &mut dyn FrameNamer,
) -> String {
    let frames = frame_reports(view, frames, namer);
    call_site(&frames)
}

/// Everything each sampled call stack created, released or not, largest first.
pub(crate) fn allocated_by_stack(
    view: &ProcessView<'_>,
    namer: &mut dyn FrameNamer,
) -> Vec<AllocatedSite> {
    let mut sites: Vec<AllocatedSite> = view
        .allocated_by_stack()
        .filter(|(frames, _)| !frames.is_empty())
        .map(|(frames, allocated)| {
            let frames = frame_reports(view, frames, namer);
            AllocatedSite {
                count: allocated.regions,
                bytes: allocated.bytes,
                call_site: call_site(&frames),
                frames,
            }
        })
        .collect();
    sites.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
    sites
}

/// A return address names the instruction after the call; the call itself is one byte
/// earlier, which is what its line should be. The innermost frame is where the syscall
/// returns to, not a call.
fn frame_report(
    view: &ProcessView<'_>,
    depth: usize,
    address: u64,
    namer: &mut dyn FrameNamer,
) -> FrameReport {
    let lookup = if depth == 0 {
        address
    } else {
        address.saturating_sub(1)
    };
    let region = view.layout().region_at(lookup);
    let module = region
        .filter(|region| region.kind == RegionKind::File || is_vdso(region))
        .and_then(|region| {
            let path = region.name.as_deref()?;
            Some((path.to_string(), region.offset + (lookup - region.start)))
        });
    let names = match &module {
        // No file: named by the symbols the recording tells, as JIT code is.
        Some(_) if region.is_some_and(is_vdso) => FrameName {
            function: view.jit_function(lookup).map(str::to_string),
            ..FrameName::default()
        },
        Some((path, offset)) if view.module_nameable(path) => {
            namer.name(path, view.module_build_id(path), *offset)
        }
        Some(_) => FrameName::default(),
        // JIT code: named by the process's perf map, as the recording tells.
        None => FrameName {
            function: view.jit_function(lookup).map(str::to_string),
            ..FrameName::default()
        },
    };
    FrameReport {
        address,
        module: module.as_ref().map(|(path, _)| path.clone()),
        offset: module.as_ref().map(|(_, offset)| *offset),
        function: names.function,
        file: names.file,
        line: names.line,
    }
}

fn is_vdso(region: &crate::model::Region) -> bool {
    region.kind == RegionKind::Vdso && region.name.as_deref() == Some(VDSO_NAME)
}

/// The allocator's own frames (in the C library and the loader), and the runtime's own
/// allocation layers, say nothing about who allocated: the call site starts at the first
/// frame outside them, and ends before the next (the C library's start-up code, a runtime's
/// entry into the program's code).
pub(crate) fn is_allocator_frame(frame: &FrameReport) -> bool {
    let in_module = frame.module.as_deref().map(|module| {
        let file_name = module.rsplit('/').next().unwrap_or(module);
        file_name.starts_with("libc.so")
            || file_name.starts_with("libc-")
            || file_name.starts_with("ld-linux")
            || file_name.starts_with("ld-")
            // The JVM itself (os::pd_reserve_memory, os::malloc, Unsafe_AllocateMemory0):
            // the Java code that called it is the call site.
            || file_name.starts_with("libjvm.")
            // The kernel's entry (`__kernel_vsyscall`) that 32-bit programs' syscalls go
            // through.
            || file_name == VDSO_NAME
    });
    in_module == Some(true)
        || frame
            .function
            .as_deref()
            .is_some_and(is_runtime_allocation_layer)
}

/// Functions of a language runtime's own allocation layers, by name (a runtime linked into
/// the program, as V8 into node, has no module of its own to tell it by): V8 and node
/// (`v8::base::OS::Allocate`, `v8::internal::BackingStore::Allocate`, the builtins that call
/// them), the JDK's own classes above the JVM (`java.nio.ByteBuffer.allocateDirect`), Go's
/// runtime (`runtime.sysAlloc`, `runtime.mallocgc`), CPython's allocators, and C++'s
/// `operator new` (in libstdc++, which is no C library).
fn is_runtime_allocation_layer(function: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "v8::",
        "node::",
        "Builtins_",
        "cppgc::",
        "partition_alloc::",
        "runtime.",
        "PyMem_",
        "_PyMem_",
        "PyObject_Malloc",
        "PyObject_Calloc",
        "_PyObject_Malloc",
        "_PyObject_Calloc",
    ];
    // A JVM perf map names a method by its class, after its return type when it has one
    // (`void java.nio.DirectByteBuffer.<init>(long, int)`).
    const JDK_CLASSES: &[&str] = &["java.", "jdk.internal.", "sun."];
    // A demangled C++ template function starts with its return type
    // (`void v8::internal::MemoryChunk::ReleaseSlotSet<…>()`): the name is the first or the
    // second word. A Java method's is the word with its parameters, whatever type it returns
    // (`java.lang.String Main.name(int)` is the program's own).
    let mut words = function.splitn(3, ' ').take(2);
    let method = function
        .split(' ')
        .find(|word| word.contains('('))
        .unwrap_or(function);
    function.starts_with("operator new")
        || words.any(|word| PREFIXES.iter().any(|prefix| word.starts_with(prefix)))
        || JDK_CLASSES.iter().any(|prefix| method.starts_with(prefix))
}

/// `hx_alloc_tmp ← process_image ← main (bigalloc.c:9)`.
pub(crate) fn call_site(frames: &[FrameReport]) -> String {
    // The program's frames: after the allocator, and before the C library's start-up code
    // that called main.
    let shown: Vec<&FrameReport> = frames
        .iter()
        .skip_while(|frame| is_allocator_frame(frame))
        .take_while(|frame| !is_allocator_frame(frame))
        .take(CALL_SITE_FRAMES)
        .collect();
    let shown = if shown.is_empty() {
        frames.iter().take(CALL_SITE_FRAMES).collect()
    } else {
        shown
    };
    let names: Vec<String> = shown.iter().map(|frame| frame_label(frame)).collect();
    let mut line = names.join(" ← ");
    if let Some(first) = shown.first() {
        if let (Some(file), Some(number)) = (&first.file, first.line) {
            let file = file.rsplit('/').next().unwrap_or(file);
            line.push_str(&format!(" ({file}:{number})"));
        }
    }
    line
}

pub(crate) fn frame_label(frame: &FrameReport) -> String {
    match (&frame.function, &frame.module, frame.offset) {
        (Some(function), _, _) => function.clone(),
        (None, Some(module), Some(offset)) => {
            let file_name = module.rsplit('/').next().unwrap_or(module);
            format!("{file_name}+{offset:#x}")
        }
        _ => format!("{:#x}", frame.address),
    }
}

/// `6 × 16 MiB = 96 MiB`, or `7 regions 100 MiB` when sizes differ.
pub(crate) fn amount(group: &CallSiteGroup) -> String {
    match group.sizes.as_slice() {
        [only] => format!(
            "{} × {} = {}",
            only.count,
            format::bytes(only.size),
            format::bytes(group.bytes)
        ),
        _ => format!("{} regions {}", group.count, format::bytes(group.bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(module: Option<&str>, function: &str) -> FrameReport {
        FrameReport {
            address: 0x1000,
            module: module.map(str::to_string),
            offset: module.map(|_| 0x10),
            function: Some(function.to_string()),
            file: None,
            line: None,
        }
    }

    /// The first frame past the C library and the runtime's own allocation layers names the
    /// call site: a JS function of node's perf map, a Java method, a Go function.
    #[test]
    fn runtime_allocation_layers_are_not_the_call_site() {
        let libc = Some("/usr/lib/x86_64-linux-gnu/libc.so.6");
        let node = Some("/usr/bin/node");
        let stack = [
            frame(libc, "__libc_calloc"),
            frame(
                node,
                "node::NodeArrayBufferAllocator::Allocate(unsigned long)",
            ),
            frame(
                node,
                "v8::internal::BackingStore::Allocate(v8::internal::Isolate*)",
            ),
            frame(node, "Builtins_JSBuiltinsConstructStub"),
            frame(None, "JS:^makeBuffers /app/jit.js:3:21"),
            frame(None, "JS:^main /app/jit.js:9:1"),
            frame(node, "Builtins_JSEntry"),
            frame(
                node,
                "v8::internal::Execution::Call(v8::internal::Isolate*)",
            ),
        ];
        assert_eq!(
            call_site(&stack),
            "JS:^makeBuffers /app/jit.js:3:21 ← JS:^main /app/jit.js:9:1"
        );

        let jvm = Some("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so");
        let java = [
            frame(libc, "malloc"),
            frame(jvm, "os::malloc(unsigned long, MEMFLAGS)"),
            frame(None, "void java.nio.DirectByteBuffer.<init>(int)"),
            frame(
                None,
                "java.nio.ByteBuffer java.nio.ByteBuffer.allocateDirect(int)",
            ),
            frame(None, "java.lang.String Retainer.makeBuffers(int)"),
            frame(jvm, "JavaCalls::call_helper(JavaValue*)"),
        ];
        assert_eq!(
            call_site(&java),
            "java.lang.String Retainer.makeBuffers(int)"
        );

        let go = [
            frame(Some("/app/server"), "runtime.sysAlloc"),
            frame(Some("/app/server"), "runtime.mallocgc"),
            frame(Some("/app/server"), "main.handle"),
        ];
        assert_eq!(call_site(&go), "main.handle");
    }
}
