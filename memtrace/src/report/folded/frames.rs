//! Frames of folded processes: kept as module+offset with the build each ran, and named only
//! when the report is written, as the process's own report would have named them.

use std::collections::HashMap;

use crate::report::{
    call_sites::{FrameName, FrameNamer},
    schema::FrameReport,
};

/// What tells a folded frame from another: its module and offset in it (or its address, when
/// outside any file), and the build it ran.
pub(super) type FrameKey = (Option<String>, u64, Option<Vec<u8>>);

/// A frame as a folded process left it: what naming it at the end of the session needs.
#[derive(Clone, Debug)]
pub(super) struct FoldedFrame {
    report: FrameReport,
    build_id: Option<Vec<u8>>,
    /// The process's report would have named it (its module's build was known to match).
    nameable: bool,
}

pub(super) fn frame_keys(frames: &[FoldedFrame]) -> Vec<FrameKey> {
    frames
        .iter()
        .map(|frame| {
            let place = frame.report.offset.unwrap_or(frame.report.address);
            (frame.report.module.clone(), place, frame.build_id.clone())
        })
        .collect()
}

/// A [`FrameNamer`] that names nothing and remembers what it was asked: the frames the
/// process's report would have named, and the build each ran.
#[derive(Default)]
pub(super) struct ToldModules {
    asked: HashMap<(String, u64), Option<Vec<u8>>>,
}

impl FrameNamer for ToldModules {
    fn name(&mut self, module: &str, build_id: Option<&[u8]>, file_offset: u64) -> FrameName {
        self.asked
            .entry((module.to_owned(), file_offset))
            .or_insert_with(|| build_id.map(<[u8]>::to_vec));
        FrameName::default()
    }
}

impl ToldModules {
    pub(super) fn folded(&self, frames: &[FrameReport]) -> Vec<FoldedFrame> {
        frames
            .iter()
            .map(|frame| {
                let asked = match (&frame.module, frame.offset) {
                    (Some(module), Some(offset)) => self.asked.get(&(module.clone(), offset)),
                    _ => None,
                };
                FoldedFrame {
                    report: frame.clone(),
                    build_id: asked.cloned().flatten(),
                    nameable: asked.is_some(),
                }
            })
            .collect()
    }
}

/// Folded frames named now, as the process's report would have named them.
pub(super) fn named(frames: &[FoldedFrame], namer: &mut dyn FrameNamer) -> Vec<FrameReport> {
    frames
        .iter()
        .map(|frame| {
            let mut report = frame.report.clone();
            if let (true, Some(module), Some(offset)) =
                (frame.nameable, &frame.report.module, frame.report.offset)
            {
                let name = namer.name(module, frame.build_id.as_deref(), offset);
                report.function = name.function;
                report.file = name.file;
                report.line = name.line;
            }
            report
        })
        .collect()
}
