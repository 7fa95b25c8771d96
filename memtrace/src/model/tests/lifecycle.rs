//! fork, threads, vfork, exec and exit.

use crate::event::{
    Abi, Comm, Event, EventBody, ExecMappingKind, ExitEvent, Syscall, SyscallEvent,
};
use crate::model::testing::*;
use crate::model::RegionKind::{Anon, File, Heap, Stack, Vdso};
use crate::model::{Birth, Origin, SyscallName};

const PARENT: u32 = 300;
const CHILD: u32 = 301;
const A: u64 = 0x7f00_0000_0000;
const PAGE: u64 = 0x1000;
const STACK: (u64, u64) = (0x7ffe_0000_0000, 0x7ffe_0002_1000);

#[test]
fn fork_copies_the_layout_and_keeps_who_created_what() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, 4 * PAGE, RW)
        .fork(PARENT, CHILD, false, false);
    feed.assert_layout(CHILD, &[(A, A + 4 * PAGE, "rw-p", Anon, "")]);

    feed.munmap(PARENT, A, 4 * PAGE)
        .mmap_anon(CHILD, A + 0x10000, PAGE, RW);
    feed.assert_layout(PARENT, &[]);
    feed.assert_layout(
        CHILD,
        &[
            (A, A + 4 * PAGE, "rw-p", Anon, ""),
            (A + 0x10000, A + 0x11000, "rw-p", Anon, ""),
        ],
    );
    let child = feed.model.process(CHILD).unwrap();
    assert_eq!(child.process().ppid(), PARENT);
    assert_eq!(child.process().birth(), Birth::Fork);
    let inherited = child.layout().region_at(A).unwrap();
    assert_eq!(
        inherited.created.pid, PARENT,
        "a copy stays the parent's creation"
    );
    let unreleased: Vec<_> = child.unreleased().map(|region| region.start).collect();
    assert_eq!(
        unreleased,
        [A + 0x10000],
        "only what the child created is its leak"
    );
}

#[test]
fn a_child_only_seen_being_forked_was_not_traced() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW)
        .fork(PARENT, CHILD, false, false);
    assert!(feed.model.process(PARENT).unwrap().process().traced());
    assert!(!feed.model.process(CHILD).unwrap().process().traced());
    feed.mmap_anon(CHILD, A + PAGE, PAGE, RW);
    assert!(feed.model.process(CHILD).unwrap().process().traced());
}

#[test]
fn threads_share_their_process() {
    let mut feed = Feed::new();
    let thread = PARENT + 7;
    feed.mmap_anon(PARENT, A, PAGE, RW)
        .fork(PARENT, thread, true, true);
    let record = SyscallEvent {
        syscall: Syscall::Mmap,
        args: [0, PAGE, RW, ANON, u64::MAX, 0],
        ret: (A + PAGE) as i64,
        entry_ns: feed.time_ns,
        string: None,
        file: None,
    };
    feed.send(PARENT, thread, EventBody::Syscall(record));
    feed.assert_layout(
        PARENT,
        &[
            (A, A + PAGE, "rw-p", Anon, ""),
            (A + PAGE, A + 2 * PAGE, "rw-p", Anon, ""),
        ],
    );
    assert_eq!(feed.model.processes().count(), 1);
    assert!(feed.model.process(thread).is_none());
}

fn exec_bash(feed: &mut Feed, pid: u32, new_abi: Abi) {
    let bash = file(11, "/usr/bin/bash");
    let ld = file(12, "/usr/lib64/ld-linux-x86-64.so.2");
    let exe = 0x5555_5555_4000;
    let interp = 0x7f11_2222_0000;
    // Capture places each PT_LOAD segment, then the bss beyond the last file page.
    feed.exec_mapping(pid, exec_mmap(exe, 0x1000, 1, 0, bash.clone()))
        .exec_mapping(
            pid,
            exec_mmap(exe + 0x1000, 0x10000, 5, 0x1000, bash.clone()),
        )
        .exec_mapping(
            pid,
            exec_mmap(exe + 0x11000, 0x6000, 1, 0x11000, bash.clone()),
        )
        .exec_mapping(pid, exec_mmap(exe + 0x17000, 0x1000, 3, 0x16000, bash))
        .exec_mapping(
            pid,
            exec_other(ExecMappingKind::Bss, exe + 0x18000, 0x2000, 3),
        )
        .exec_mapping(pid, exec_mmap(interp, 0x2000, 1, 0, ld.clone()))
        .exec_mapping(pid, exec_mmap(interp + 0x2000, 0x1000, 5, 0x2000, ld))
        .exec_mapping(pid, exec_special(0x7fff_f000_0000, 0x4000, 1, "[vvar]"))
        .exec_mapping(pid, exec_special(0x7fff_f000_4000, 0x2000, 5, "[vdso]"));
    let mut record = exec_record("/usr/bin/bash", new_abi, exe + 0x20000, STACK);
    record.layout.start_code = exe + 0x1000;
    record.layout.entry = exe + 0x1234;
    record.layout.interp_base = interp;
    record.personality = 0x0040_0000;
    feed.comm = "bash";
    feed.exec(pid, record);
}

#[test]
fn exec_replaces_the_layout_with_the_kernels_mappings_and_the_stack() {
    let mut feed = Feed::new();
    feed.abi = Abi::I386;
    feed.comm = "sshd";
    feed.mmap_anon(PARENT, 0x1000_0000, PAGE, RW);
    // The exec's own events carry the ABI it was called from.
    exec_bash(&mut feed, PARENT, Abi::X86_64);
    feed.abi = Abi::X86_64;
    let exe = 0x5555_5555_4000;
    let interp = 0x7f11_2222_0000;
    feed.assert_layout(
        PARENT,
        &[
            (exe, exe + 0x1000, "r--p", File, "/usr/bin/bash"),
            (exe + 0x1000, exe + 0x11000, "r-xp", File, "/usr/bin/bash"),
            (exe + 0x11000, exe + 0x17000, "r--p", File, "/usr/bin/bash"),
            (exe + 0x17000, exe + 0x18000, "rw-p", File, "/usr/bin/bash"),
            (exe + 0x18000, exe + 0x1a000, "rw-p", Anon, ""),
            (
                interp,
                interp + 0x2000,
                "r--p",
                File,
                "/usr/lib64/ld-linux-x86-64.so.2",
            ),
            (
                interp + 0x2000,
                interp + 0x3000,
                "r-xp",
                File,
                "/usr/lib64/ld-linux-x86-64.so.2",
            ),
            (STACK.0, STACK.1, "rw-p", Stack, "[stack]"),
            (0x7fff_f000_0000, 0x7fff_f000_4000, "r--p", Vdso, "[vvar]"),
            (0x7fff_f000_4000, 0x7fff_f000_6000, "r-xp", Vdso, "[vdso]"),
        ],
    );
    let view = feed.model.process(PARENT).unwrap();
    assert!(view
        .layout()
        .iter()
        .all(|region| region.created.origin == Origin::Exec));
    let process = view.process();
    assert_eq!(process.comm(), "bash");
    assert_eq!(process.exe(), "/usr/bin/bash");
    assert_eq!(process.abi(), Abi::X86_64);
    let exec = &process.execs()[0];
    assert_eq!((exec.from_abi, exec.to_abi), (Abi::I386, Abi::X86_64));
    assert_eq!(exec.personality, 0x0040_0000);
    assert_eq!(exec.exe_base, exe);
    assert_eq!(exec.interp_base, interp);
    assert_eq!(exec.brk_start, exe + 0x20000);
    assert_eq!((exec.stack_start, exec.stack_end), STACK);
    assert_eq!(view.unreleased().count(), 0);
}

#[test]
fn exec_facts_find_the_libraries_once_the_process_ran() {
    let mut feed = Feed::new();
    exec_bash(&mut feed, PARENT, Abi::X86_64);
    let libc = file(13, "/usr/lib64/libc.so.6");
    let locale = file(14, "/usr/lib/locale/locale-archive");
    feed.mmap_file(
        PARENT,
        0x7f11_0000_0000,
        0x28000,
        PROT_READ,
        MAP_PRIVATE,
        3,
        0,
        libc.clone(),
    )
    .mmap_file(
        PARENT,
        0x7f11_0002_8000,
        0x100000,
        RX,
        MAP_PRIVATE | MAP_FIXED,
        3,
        0x28000,
        libc,
    )
    .mmap_file(
        PARENT,
        0x7f00_0000_0000,
        0x200000,
        PROT_READ,
        MAP_PRIVATE,
        4,
        0,
        locale,
    );
    let view = feed.model.process(PARENT).unwrap();
    let facts = view.exec_facts(&view.process().execs()[0]);
    assert_eq!(
        facts.lowest_library,
        Some(0x7f11_0000_0000),
        "locale-archive has no code"
    );
    assert_eq!(facts.highest_library, Some(0x7f11_0002_8000));
    assert_eq!(facts.above_brk.unwrap().start, 0x7f00_0000_0000);
}

#[test]
fn failed_exec_discards_the_kernels_buffered_mappings() {
    let mut feed = Feed::new();
    let ghost = file(20, "/usr/bin/ghost");
    feed.exec_mapping(PARENT, exec_mmap(0x40_0000, PAGE, 5, 0, ghost))
        .syscall_full(
            PARENT,
            Syscall::Execve,
            [0; 6],
            -ENOENT,
            Some("/usr/bin/ghost"),
            None,
        );
    exec_bash(&mut feed, PARENT, Abi::X86_64);
    let view = feed.model.process(PARENT).unwrap();
    assert!(view.layout().region_at(0x40_0000).is_none());
    let counts = view.process().stats().counts(SyscallName::Execve);
    assert_eq!((counts.calls, counts.failed), (1, 1));
    assert_eq!(view.process().execs().len(), 1);
}

#[test]
fn exec_with_an_existing_break_has_a_heap() {
    let mut feed = Feed::new();
    let mut record = exec_record("/bin/static", Abi::X86_64, 0x60_0000, STACK);
    record.layout.brk = 0x60_2010;
    feed.exec(PARENT, record);
    feed.assert_layout(
        PARENT,
        &[
            (0x60_0000, 0x60_3000, "rw-p", Heap, "[heap]"),
            (STACK.0, STACK.1, "rw-p", Stack, "[stack]"),
        ],
    );
}

#[test]
fn vfork_child_shares_until_it_execs() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW)
        .fork(PARENT, CHILD, false, true)
        // Runs on the parent's memory.
        .mmap_anon(CHILD, A + PAGE, PAGE, RW);
    let both = [
        (A, A + PAGE, "rw-p", Anon, ""),
        (A + PAGE, A + 2 * PAGE, "rw-p", Anon, ""),
    ];
    feed.assert_layout(PARENT, &both);
    feed.assert_layout(CHILD, &both);

    exec_bash(&mut feed, CHILD, Abi::X86_64);
    feed.assert_layout(PARENT, &both);
    feed.munmap(PARENT, A, 2 * PAGE);
    feed.assert_layout(PARENT, &[]);
    assert_eq!(feed.layout(CHILD).len(), 10, "the child's own image");
}

#[test]
fn vfork_child_exiting_without_exec_keeps_a_frozen_copy() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW)
        .fork(PARENT, CHILD, false, true)
        .mmap_anon(CHILD, A + 0x10000, PAGE, RW)
        .exit(CHILD, 0);
    feed.munmap(PARENT, A, PAGE);
    feed.assert_layout(PARENT, &[(A + 0x10000, A + 0x11000, "rw-p", Anon, "")]);
    // Compacted at exit: what it made itself stays, its parent's memory is the parent's.
    feed.assert_layout(CHILD, &[(A + 0x10000, A + 0x11000, "rw-p", Anon, "")]);
    let child = feed.model.process(CHILD).unwrap();
    let timeline = child.process().timeline().samples();
    assert_eq!(
        timeline.last().map(|sample| sample.regions),
        Some(2),
        "the exit sample is taken before the compaction"
    );
}

#[test]
fn exit_freezes_the_layout_and_records_code_or_signal() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW).exit(PARENT, 3 << 8);
    let exit_ns = feed.time_ns;
    // A straggler made before the exit: too late to change the frozen layout.
    let straggler = Event {
        time_ns: exit_ns - 10,
        pid: PARENT,
        tid: PARENT,
        comm: Comm::from_str_lossy("test"),
        abi: Abi::X86_64,
        body: EventBody::Syscall(SyscallEvent {
            syscall: Syscall::Munmap,
            args: [A, PAGE, 0, 0, 0, 0],
            ret: 0,
            entry_ns: exit_ns - 20,
            string: None,
            file: None,
        }),
    };
    feed.model.apply(&straggler);
    feed.assert_layout(PARENT, &[(A, A + PAGE, "rw-p", Anon, "")]);
    assert_eq!(feed.model.ignored_events(), 1);
    let process = feed.model.process(PARENT).unwrap().process();
    let exit = process.exit().unwrap();
    assert_eq!((exit.code, exit.signal), (Some(3), None));

    feed.fork(PARENT + 1, CHILD, false, false).send(
        CHILD,
        CHILD,
        EventBody::Exit(ExitEvent {
            status: 9,
            group_dead: true,
        }),
    );
    let killed = feed
        .model
        .process(CHILD)
        .unwrap()
        .process()
        .exit()
        .copied()
        .unwrap();
    assert_eq!((killed.code, killed.signal), (None, Some(9)));
}

#[test]
fn a_reused_pid_is_a_new_process() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW)
        .exit(PARENT, 0)
        .mmap_anon(PARENT, A + PAGE, PAGE, RW);
    assert_eq!(feed.model.processes().count(), 2);
    feed.assert_layout(PARENT, &[(A + PAGE, A + 2 * PAGE, "rw-p", Anon, "")]);
    let first = feed.model.processes().next().unwrap();
    assert_eq!(first.layout().len(), 1);
    assert!(!first.process().alive());
}

#[test]
fn thread_exit_is_not_process_exit() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW).send(
        PARENT,
        PARENT + 1,
        EventBody::Exit(ExitEvent {
            status: 0,
            group_dead: false,
        }),
    );
    assert!(feed.model.process(PARENT).unwrap().process().alive());
}

#[test]
fn events_for_unknown_pids_create_processes_lazily() {
    let mut feed = Feed::new();
    feed.exit(900, 0)
        .fork(901, 902, false, false)
        .exec_mapping(903, exec_other(ExecMappingKind::Bss, 0x1000, 0x1000, 3))
        .munmap(904, A, PAGE)
        .brk(905, 0, 0x1000);
    let pids: Vec<_> = feed
        .model
        .processes()
        .map(|view| view.process().pid())
        .collect();
    assert_eq!(pids, [900, 901, 902, 903, 904, 905]);
    assert_eq!(feed.model.process(902).unwrap().process().ppid(), 901);
    assert_eq!(
        feed.model.process(904).unwrap().process().birth(),
        Birth::Lazy
    );
}

#[test]
fn a_child_seen_before_its_fork_is_adopted_on_a_copy_of_the_parent() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, 4 * PAGE, RW)
        // Delivered out of order: the child's mmap before the parent's fork event.
        .mmap_fixed_anon(CHILD, A + PAGE, PAGE, PROT_NONE)
        .fork(PARENT, CHILD, false, false);
    feed.assert_layout(
        CHILD,
        &[
            (A, A + PAGE, "rw-p", Anon, ""),
            (A + PAGE, A + 2 * PAGE, "---p", Anon, ""),
            (A + 2 * PAGE, A + 4 * PAGE, "rw-p", Anon, ""),
        ],
    );
    assert_eq!(feed.model.process(CHILD).unwrap().process().ppid(), PARENT);
    assert_eq!(feed.model.processes().count(), 2);
}

#[test]
fn an_exec_is_all_memtrace_knows_of_a_process_the_abi_before_is_unknown() {
    let mut feed = Feed::new();
    // No parked execve entry: the probe could not tell the caller's ABI.
    feed.abi = Abi::Unknown;
    exec_bash(&mut feed, PARENT, Abi::X86_64);
    let process = feed.model.process(PARENT).unwrap().process();
    let exec = &process.execs()[0];
    assert_eq!((exec.from_abi, exec.to_abi), (Abi::Unknown, Abi::X86_64));
    assert_eq!(process.abi(), Abi::X86_64);
}

#[test]
fn an_exec_event_names_the_abi_it_was_called_from() {
    let mut feed = Feed::new();
    feed.abi = Abi::I386;
    exec_bash(&mut feed, PARENT, Abi::X86_64);
    let process = feed.model.process(PARENT).unwrap().process();
    let exec = &process.execs()[0];
    assert_eq!((exec.from_abi, exec.to_abi), (Abi::I386, Abi::X86_64));
    assert_eq!(process.abi(), Abi::X86_64);
}

/// Samples have a ring of their own, so one can be read after its process's exit record
/// (a short program exits before the reader's next look at the sample ring): it still goes
/// to the region its syscall created.
#[test]
fn a_stack_read_after_its_process_exit_still_names_its_region() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, 16 * PAGE, RW);
    let mmap_ns = feed.time_ns;
    feed.mmap_anon(PARENT, A + 0x100000, PAGE, RW)
        .exit(PARENT, 0);
    let sample = Event {
        time_ns: mmap_ns,
        pid: PARENT,
        tid: PARENT,
        comm: Comm::from_str_lossy("test"),
        abi: Abi::X86_64,
        body: EventBody::Stack(crate::event::StackEvent {
            truncated: false,
            frames: vec![0x401000, 0x402000],
        }),
    };
    feed.model.apply(&sample);
    let process = feed.model.process(PARENT).unwrap();
    let stacked = |at| process.layout().region_at(at).unwrap().stack.is_some();
    assert!(stacked(A));
    assert!(!stacked(A + 0x100000));
}

/// Forks and ends `count` children of PARENT, folding after each exit as user mode does;
/// returns the pids shown to `fold` and those forgotten.
fn churn_children(
    feed: &mut Feed,
    count: u32,
    keep: usize,
    fold: &mut dyn FnMut(crate::model::ProcessView<'_>) -> crate::model::Fold,
) -> Vec<u32> {
    let mut forgotten = Vec::new();
    for index in 0..count {
        let child = 1000 + index;
        feed.fork(PARENT, child, false, false)
            .mmap_anon(child, A, PAGE, RW)
            .exit(child, 0);
        forgotten.extend(feed.model.fold_exited(keep, fold));
    }
    forgotten
}

#[test]
fn exited_processes_past_the_most_recent_are_folded_away() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW);
    let mut shown = Vec::new();
    let forgotten = churn_children(&mut feed, 100, 5, &mut |view| {
        let process = view.process();
        assert!(process.exit().is_some(), "only exited processes are folded");
        // Its layout at exit is there for its report.
        assert_eq!(view.unreleased().count(), 1);
        shown.push(process.pid());
        crate::model::Fold::Away
    });
    // Oldest exit first, each once; the five most recent stay.
    assert_eq!(shown, (1000..1095).collect::<Vec<u32>>());
    assert_eq!(forgotten, shown);
    assert_eq!(feed.model.process_count(), 6);
    assert!(feed.model.process(1094).is_none());
    assert!(feed.model.process(1095).is_some());
    // The parent goes on as before.
    feed.assert_layout(PARENT, &[(A, A + PAGE, "rw-p", Anon, "")]);
}

#[test]
fn a_process_kept_in_full_is_not_shown_again() {
    let mut feed = Feed::new();
    let mut shown = Vec::new();
    churn_children(&mut feed, 10, 0, &mut |view| {
        let pid = view.process().pid();
        shown.push(pid);
        if pid == 1003 {
            crate::model::Fold::Keep
        } else {
            crate::model::Fold::Away
        }
    });
    assert_eq!(shown, (1000..1010).collect::<Vec<u32>>());
    let mut again = Vec::new();
    feed.model.fold_exited(0, &mut |view| {
        again.push(view.process().pid());
        crate::model::Fold::Away
    });
    assert!(again.is_empty());
    let pids: Vec<u32> = feed
        .model
        .processes()
        .map(|view| view.process().pid())
        .collect();
    assert_eq!(pids, [PARENT, 1003]);
}

#[test]
fn a_folded_pids_late_events_are_ignored_and_a_new_process_may_take_it() {
    let mut feed = Feed::new();
    churn_children(&mut feed, 3, 0, &mut |_| crate::model::Fold::Away);
    assert_eq!(feed.model.process_count(), 1);
    let exit_ns = feed.time_ns;
    let ignored = feed.model.ignored_events();
    // A stack sample or syscall record of the first child read late: made before its exit.
    let late = Event {
        time_ns: exit_ns - 10_000,
        pid: 1002,
        tid: 1002,
        comm: Comm::from_str_lossy("late"),
        abi: Abi::X86_64,
        body: EventBody::Syscall(SyscallEvent {
            syscall: Syscall::Mmap,
            args: [0, PAGE, RW, ANON, u64::MAX, 0],
            ret: (A + 0x100000) as i64,
            entry_ns: exit_ns - 10_500,
            string: None,
            file: None,
        }),
    };
    feed.model.apply(&late);
    assert_eq!(feed.model.ignored_events(), ignored + 1);
    assert!(
        feed.model.process(1002).is_none(),
        "no process made of a straggler"
    );
    // The pid taken again by a new process: a process of its own.
    feed.fork(PARENT, 1002, false, false)
        .mmap_anon(1002, A, 2 * PAGE, RW);
    feed.assert_layout(1002, &[(A, A + 2 * PAGE, "rw-p", Anon, "")]);
}

#[test]
fn a_child_memtrace_does_not_trace_is_not_kept() {
    let mut feed = Feed::new();
    feed.mmap_anon(PARENT, A, PAGE, RW);
    let fork = crate::event::ForkEvent {
        child_pid: CHILD,
        child_tid: CHILD,
        thread: false,
        shares_mm: false,
        untraced: true,
    };
    feed.send(PARENT, PARENT, EventBody::Fork(fork));
    assert!(feed.model.process(CHILD).is_none());
    assert_eq!(feed.model.process_count(), 1);
}
