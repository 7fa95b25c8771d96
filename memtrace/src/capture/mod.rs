//! Reading the kernel's two rings (events, and stack samples) on a thread of their own, and
//! handing decoded batches to the session.
//!
//! The reader thread does nothing but drain and decode, so the rings empty as fast as the
//! kernel fills them whatever the consumer costs (unwinding a stack sample costs far more than
//! decoding an event). It waits for the kernel's wakeup (sent when a quarter of a ring is
//! full: one wakeup per event would cost more than the event) or a short timer, which is
//! what delivers a quiet stream.

mod completion;
pub mod decode;
pub mod exec_image;
mod pairing;
pub(crate) mod roots;

use std::{
    io,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use decode::Decoded;
pub use decode::{Note, OomVictim, RawStack, TaskIdentity};
use pairing::StackPairing;

use crate::event::{Event, EventBody};

/// What the rings deliver: events, stack samples that become events once unwound, and what
/// the kernel told besides (who a task is, an OOM victim).
#[derive(Debug)]
pub enum Captured {
    Event(Event),
    Stack(RawStack),
    /// In ring order: a fork's child's identity and an exec's come just before the event, so
    /// that whoever names the process from it has it by then.
    Note(Note),
}

/// How long a record may wait in a quiet ring before it is read anyway.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Stack samples read but not yet taken by the session, at most, in bytes. Unwinding costs far
/// more than reading, so under a flood of sampled calls the samples (up to 8 KiB each) would
/// pile up in memtrace's memory without bound (2.5 GB measured with every call sampled); past
/// this the reader drops samples, counted as not sampled like a full stack ring, and never an
/// event. Counted in bytes, as samples differ in size.
///
/// Sized from a start-up burst: node starting four workers that each allocate 500 blocks of
/// 256 KiB or more makes some 1,500 samples (8.2 KiB each, 12 MiB) within the first second,
/// while the session reads node's 99 MB executable at first sight (its unwind sections and
/// 185,000 symbols, 0.1 s of CPU, several times that on a loaded machine): 8 MiB dropped
/// 200 to 1,700 of them. Four times the burst leaves room for a slower machine; a session
/// that keeps up holds a drain or two (about 2 MiB for 5000 short-lived children on 2 cores).
const MAX_SAMPLE_BYTES_IN_FLIGHT: u64 = 48 << 20;

/// The samples between the reader and the session, shared by both.
#[derive(Debug, Default)]
struct Backlog {
    /// What the samples in flight hold ([`held_bytes`]).
    bytes_in_flight: AtomicU64,
    dropped: AtomicU64,
}

impl Backlog {
    /// Whether a sample just read may go on (then it counts as in flight).
    fn admit(&self, sample: &RawStack) -> bool {
        let bytes = held_bytes(sample);
        if self.bytes_in_flight.load(Ordering::Relaxed) + bytes > MAX_SAMPLE_BYTES_IN_FLIGHT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bytes_in_flight.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    /// The session took these captures.
    fn taken(&self, batch: &[Captured]) {
        let bytes = batch
            .iter()
            .map(|captured| match captured {
                Captured::Stack(sample) => held_bytes(sample),
                Captured::Event(_) | Captured::Note(_) => 0,
            })
            .sum();
        self.bytes_in_flight.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The memory a sample holds until the session takes it: its stack bytes and its capture.
fn held_bytes(sample: &RawStack) -> u64 {
    (sample.sample.stack.len() + std::mem::size_of::<Captured>()) as u64
}

/// What the reader could not turn into events.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureCounts {
    /// Records that could not be decoded: reported, never dropped silently.
    pub undecodable: u64,
    /// Execs whose image could not be read back (the file vanished, or is not ELF): their
    /// layout lacks the executable's and interpreter's mappings.
    pub unreadable_images: u64,
    /// Stack samples dropped because the session was [`MAX_SAMPLE_BYTES_IN_FLIGHT`] behind.
    pub stacks_dropped: u64,
}

/// The two rings and what the reader keeps between drains.
pub struct Capture {
    events: RingBuf<MapData>,
    stacks: RingBuf<MapData>,
    pairing: StackPairing,
    /// Decodes the messages, and knows each thread's comm.
    decoder: decode::Decoder,
    /// Each traced process's root, for the images of those gone before their exec is read.
    roots: roots::Roots,
    /// Reads what shmat and io_setup mapped.
    completion: completion::Completion,
    counts: CaptureCounts,
    backlog: Arc<Backlog>,
}

impl Capture {
    pub fn new(events: RingBuf<MapData>, stacks: RingBuf<MapData>) -> Self {
        Self {
            events,
            stacks,
            pairing: StackPairing::default(),
            decoder: decode::Decoder::default(),
            roots: roots::Roots::default(),
            completion: completion::Completion::default(),
            counts: CaptureCounts::default(),
            backlog: Arc::default(),
        }
    }

    /// Starts the reader thread. Batches come out of [`Reader::next_batch`] in the order the
    /// reader read them; that order is the one the model and the recording see.
    pub fn spawn(mut self) -> io::Result<Reader> {
        let (sender, batches) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let backlog = Arc::clone(&self.backlog);
        let thread = std::thread::Builder::new()
            .name("memtrace-ring".into())
            .spawn(move || {
                self.read_until(&stopping, &sender);
                self.counts
            })?;
        Ok(Reader {
            batches,
            stop,
            backlog,
            thread: Some(thread),
        })
    }

    fn read_until(&mut self, stop: &AtomicBool, sender: &UnboundedSender<Vec<Captured>>) {
        let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
        loop {
            // Read after the wait, so that a stop asked for during it still gets a last drain
            // of everything the kernel wrote before.
            let stopping = stop.load(Ordering::Acquire);
            let mut fds = [
                PollFd::new(self.events.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stacks.as_fd(), PollFlags::POLLIN),
            ];
            if !stopping {
                // An error (EINTR) only shortens the wait.
                let _ = poll(&mut fds, timeout);
            }
            let mut batch = Vec::new();
            self.drain(&mut batch, stopping);
            if !batch.is_empty() && sender.send(batch).is_err() {
                return;
            }
            if stopping {
                return;
            }
        }
    }

    /// Takes everything that is in the rings now. Samples first: the kernel submits a sample
    /// after its syscall's record, so every sample read here has its record in the event ring
    /// by now (or in an earlier drain) and can be placed right behind it. A record can still
    /// come a drain later (the reader stops at another CPU's unsubmitted record): its sample
    /// waits for it, unless this is the `last` drain.
    pub fn drain(&mut self, out: &mut Vec<Captured>, last: bool) {
        while let Some(record) = self.stacks.next() {
            match self.decoder.decode(&record) {
                Ok(Decoded::Stack(stack)) => {
                    if self.backlog.admit(&stack) {
                        self.pairing.sampled(stack);
                    }
                }
                Ok(Decoded::Event { .. } | Decoded::Noted(_)) | Err(_) => {
                    self.counts.undecodable += 1
                }
            }
        }
        while let Some(record) = self.events.next() {
            match self.decoder.decode(&record) {
                Ok(Decoded::Event {
                    mut event,
                    loaded_image,
                    identity,
                }) => {
                    out.extend(identity.map(|identity| Captured::Note(Note::Identity(identity))));
                    self.completion.complete(&mut event);
                    self.roots.observe(&event);
                    if let Some(image) = &loaded_image {
                        if let EventBody::Exec(exec) = &event.body {
                            crate::stacks::vdso::remember(exec.new_abi, event.pid, image.vdso_base);
                        }
                        let root = self.roots.root_of(event.pid);
                        self.counts.unreadable_images +=
                            u64::from(!push_kernel_mappings(&event, image, root, out));
                    }
                    let sample = self.pairing.take_for(&event);
                    out.push(Captured::Event(event));
                    out.extend(sample.map(Captured::Stack));
                }
                // The decoder keeps the comm; the session takes the rest.
                Ok(Decoded::Noted(note)) => out.push(Captured::Note(note)),
                // Samples have a ring of their own; one here would be a kernel-side bug.
                Ok(Decoded::Stack(_)) => self.counts.undecodable += 1,
                Err(error) => {
                    self.counts.undecodable += 1;
                    log::warn!("{error}");
                }
            }
        }
        // Samples whose records came in an earlier drain, or never: they name their syscall by
        // its time, so the model attaches them wherever they arrive.
        out.extend(self.pairing.take_unpaired(last).map(Captured::Stack));
    }
}

/// The session's end of the reader thread.
pub struct Reader {
    batches: UnboundedReceiver<Vec<Captured>>,
    stop: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
    thread: Option<JoinHandle<CaptureCounts>>,
}

impl Reader {
    /// The next batch the reader drained (waits for one).
    pub async fn next_batch(&mut self) -> Option<Vec<Captured>> {
        let batch = self.batches.recv().await?;
        self.backlog.taken(&batch);
        Some(batch)
    }

    /// Samples the reader dropped so far because the session was too far behind.
    pub fn stacks_dropped(&self) -> u64 {
        self.backlog.dropped.load(Ordering::Relaxed)
    }

    /// Stops the reader after a last drain, and returns every batch still on its way and
    /// what it could not decode.
    pub fn finish(mut self) -> (Vec<Captured>, CaptureCounts) {
        self.stop.store(true, Ordering::Release);
        let mut counts: CaptureCounts = self
            .thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        counts.stacks_dropped = self.stacks_dropped();
        let mut rest = Vec::new();
        while let Ok(batch) = self.batches.try_recv() {
            rest.extend(batch);
        }
        (rest, counts)
    }
}

/// Puts the mappings the kernel made for an exec in front of the exec event, as the model
/// expects them. Returns false when the image could not be read.
fn push_kernel_mappings(
    exec: &Event,
    image: &exec_image::LoadedImage,
    root: Option<&std::path::Path>,
    out: &mut Vec<Captured>,
) -> bool {
    match exec_image::kernel_mappings(image, exec.pid, root) {
        Ok(mappings) => {
            out.extend(mappings.into_iter().map(|mapping| {
                Captured::Event(Event {
                    body: EventBody::ExecMapping(mapping),
                    ..exec.clone()
                })
            }));
            true
        }
        Err(error) => {
            log::warn!("pid {}: exec layout incomplete: {error}", exec.pid);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Abi, Comm},
        stacks::{StackAbi, StackSample},
    };

    fn sample(stack_bytes: usize) -> RawStack {
        RawStack {
            time_ns: 1,
            pid: 2,
            tid: 2,
            comm: Comm::default(),
            abi: Abi::X86_64,
            sample: StackSample {
                abi: StackAbi::X86_64,
                ip: 0,
                sp: 0,
                bp: 0,
                stack: vec![0; stack_bytes],
            },
        }
    }

    /// Samples are admitted while their bytes fit, then dropped and counted, until the
    /// session takes some.
    #[test]
    fn the_backlog_is_bounded_by_bytes() {
        let backlog = Backlog::default();
        let full = sample(8192);
        let fitting = MAX_SAMPLE_BYTES_IN_FLIGHT / held_bytes(&full);
        let admitted: Vec<RawStack> = (0..fitting + 10)
            .map(|_| full.clone())
            .filter(|sample| backlog.admit(sample))
            .collect();
        assert_eq!(admitted.len() as u64, fitting);
        assert_eq!(backlog.dropped.load(Ordering::Relaxed), 10);
        // A small sample may still fit where a full one does not.
        assert!(backlog.admit(&sample(16)));

        let taken: Vec<Captured> = admitted.into_iter().map(Captured::Stack).collect();
        backlog.taken(&taken);
        assert!(backlog.admit(&full));
        assert_eq!(backlog.dropped.load(Ordering::Relaxed), 10);
    }
}
