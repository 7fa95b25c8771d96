//! Recordings: a tracing session's event stream stored in a file, to be replayed elsewhere.
//!
//! The format is memtrace's own and is specified in `docs/recording-format.md`. In short: a
//! preamble (magic, version), then checksummed frames: a header with the session's metadata,
//! batches of compactly encoded [`Event`](crate::event::Event)s, and a trailer when the session
//! finished cleanly. A recording cut off anywhere still replays every complete frame.
//!
//! - [`RecordingWriter`] is what a live session writes through.
//! - [`RecordingReader`] gives the header, then the events, then a [`ReplayOutcome`].
//! - `workload` (tests only) makes a synthetic mmap/munmap stream.

mod codec;
mod error;
mod frame;
mod frame_reader;
mod header;
mod kernel_codec;
mod reader;
mod wire;
#[cfg(test)]
pub(crate) mod workload;
mod writer;

#[cfg(test)]
mod tests;

pub use error::RecordError;
pub use frame::{FORMAT_VERSION, MAGIC, MAX_FRAME_PAYLOAD};
pub use header::{ClockBase, Mode, RecordingHeader, Trailer};
pub use reader::{RecordingReader, ReplayOutcome, Truncation};
pub use writer::{RecordingSink, RecordingWriter, WriterOptions};
