//! Everything that can go wrong writing or reading a recording, each as one line a user can act
//! on. I/O errors are folded into the message (not chained) so that every variant prints
//! completely on its own.

use std::{io, path::PathBuf};

use super::frame::{FORMAT_VERSION, MAX_FRAME_PAYLOAD, OLDEST_READABLE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file was refused (a symbolic link, someone else's…) or could not be created.
    #[error(transparent)]
    Create(#[from] crate::output::OutputError),

    #[error("cannot open recording {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },

    #[error("cannot write recording: {0}")]
    Write(io::Error),

    #[error("cannot read recording: {0}")]
    Read(io::Error),

    /// A write failed part-way, so appending more would put frames after a partial one; the
    /// recording keeps everything before the failure.
    #[error(
        "recording stopped after an earlier write error; it holds the events written before it"
    )]
    WriterFailed,

    #[error("cannot copy a frame into the recording: {reason}")]
    CopiedFrame { reason: &'static str },

    #[error("an event needs {size} bytes, more than the {MAX_FRAME_PAYLOAD} a frame can hold")]
    EventTooLarge { size: usize },

    #[error("the recording header needs {size} bytes, more than the {MAX_FRAME_PAYLOAD} a frame can hold")]
    HeaderTooLarge { size: usize },

    #[error("not a memtrace recording: the file is empty")]
    Empty,

    #[error("not a memtrace recording: bad magic")]
    BadMagic,

    #[error("recording format version {found} is not supported (this memtrace reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },

    #[error("recording is cut off after {bytes} bytes, inside its header: it holds no events")]
    TruncatedHeader { bytes: u64 },

    #[error("recording header is corrupt: {reason}")]
    CorruptHeader { reason: &'static str },

    /// The frame structure is lost: no frame starts where one must, so nothing after this point
    /// can be found.
    #[error("recording is corrupt at byte {byte} ({reason}); nothing after it can be read")]
    Unrecoverable { byte: u64, reason: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_single_lines() {
        let errors = [
            RecordError::BadMagic,
            RecordError::UnsupportedVersion { found: 7 },
            RecordError::Open {
                path: "/nonexistent/rec".into(),
                error: io::Error::from(io::ErrorKind::NotFound),
            },
            RecordError::Unrecoverable {
                byte: 42,
                reason: "no frame starts here",
            },
        ];
        for error in errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
        assert_eq!(
            RecordError::UnsupportedVersion { found: 7 }.to_string(),
            "recording format version 7 is not supported (this memtrace reads versions 1 to 3)"
        );
        assert_eq!(
            RecordError::BadMagic.to_string(),
            "not a memtrace recording: bad magic"
        );
    }
}
