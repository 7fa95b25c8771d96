//! Reading the ring buffer: waits for the kernel's wakeup or a short timer, and drains every
//! record into decoded [`Event`]s.
//!
//! The kernel side wakes the reader only when a quarter of the ring is full (one wakeup per
//! event would cost more than the event), so the timer is what delivers a quiet stream.

pub mod decode;
pub mod exec_image;

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use decode::Decoded;
pub use decode::StackCapture;

use crate::event::{Event, EventBody};

/// What the ring delivers: events, and stack samples that become events once unwound.
#[derive(Debug)]
pub enum Captured {
    Event(Event),
    Stack(StackCapture),
}

/// How long a record may wait in a quiet ring before it is read anyway.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub struct Capture {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded: reported, never dropped silently.
    pub undecodable: u64,
    /// Execs whose image could not be read back (the file vanished, or is not ELF): their
    /// layout lacks the executable's and interpreter's mappings.
    pub unreadable_images: u64,
}

impl Capture {
    #[expect(
        deprecated,
        reason = "AsyncFd::new is deprecated because a borrowed fd could be closed under it; the \
                  ring buffer owns its fd and lives inside the AsyncFd, and the replacement is unsafe"
    )]
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        Ok(Self {
            ring: AsyncFd::new(ring)?,
            undecodable: 0,
            unreadable_images: 0,
        })
    }

    /// Waits until the kernel signals data or [`POLL_INTERVAL`] passes, then drains.
    pub async fn next_batch(&mut self, out: &mut Vec<Captured>) -> io::Result<()> {
        match tokio::time::timeout(POLL_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                guard.clear_ready();
            }
            Err(_elapsed) => {}
        }
        self.drain(out);
        Ok(())
    }

    /// Takes everything that is in the ring now.
    pub fn drain(&mut self, out: &mut Vec<Captured>) {
        let ring = self.ring.get_mut();
        while let Some(record) = ring.next() {
            match decode::decode(&record) {
                Ok(Decoded::Event {
                    event,
                    loaded_image,
                }) => {
                    if let Some(image) = &loaded_image {
                        self.unreadable_images +=
                            u64::from(!push_kernel_mappings(&event, image, out));
                    }
                    out.push(Captured::Event(event));
                }
                Ok(Decoded::Stack(stack)) => out.push(Captured::Stack(stack)),
                Err(error) => {
                    self.undecodable += 1;
                    log::warn!("{error}");
                }
            }
        }
    }
}

/// Puts the mappings the kernel made for an exec in front of the exec event, as the model
/// expects them. Returns false when the image could not be read.
fn push_kernel_mappings(
    exec: &Event,
    image: &exec_image::LoadedImage,
    out: &mut Vec<Captured>,
) -> bool {
    match exec_image::kernel_mappings(image, exec.pid) {
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
