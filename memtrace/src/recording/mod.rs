//! Recordings: a tracing session's event stream stored in a file, to be replayed elsewhere.
//!
//! The format is memtrace's own and is specified in `docs/recording-format.md`. In short: a
//! preamble (magic, version, the session's random id), then frames checksummed with that id: a
//! header with the session's metadata, batches of compactly encoded (and compressed)
//! [`Event`](crate::event::Event)s, and a trailer when the session finished cleanly. A
//! recording cut off anywhere still replays every complete frame; each events frame decodes on
//! its own.
//!
//! - [`RecordingWriter`] is what a live session writes through; its
//!   [`copy_frame`](RecordingWriter::copy_frame) writes a recording of its own from frames of
//!   another (the agent's flight recorder, found by [`frame_bounds`]).
//! - [`RecordingReader`] gives the header, then the events, then a [`ReplayOutcome`].
//! - `workload` (tests only) makes a synthetic mmap/munmap stream.

mod codec;
mod error;
mod events_frame;
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
pub use frame::{frame_bounds, SessionId, FORMAT_VERSION, MAGIC, MAX_FRAME_PAYLOAD};
pub use frame_reader::AfterTrailer;
pub use header::{ClockBase, Mode, RecordingHeader, Trailer};
pub use reader::{RecordingReader, ReplayOutcome, Truncation};
pub use writer::{RecordingSink, RecordingWriter, WriterOptions};
