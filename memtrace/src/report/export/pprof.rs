//! pprof's `profile.proto`, gzipped: what `go tool pprof`, Pyroscope, Parca, Perfetto and
//! speedscope read. Four values per call stack, in use first (the default):
//! `inuse_space`/`inuse_objects` (still mapped at the end) and `alloc_space`/`alloc_objects`
//! (created during the session), an "object" being a mapped region.
//!
//! Each process is a root frame (`comm-pid`) with `pid` and `comm` labels on its samples, so
//! the processes of a `--follow` session stay apart; its frames' mappings come from its own
//! layout. Each program's folded processes are one more root (`comm (N exited, folded)`,
//! labelled with the first one's pid), their mappings without addresses.

use std::{collections::HashMap, io::Write as _};

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::report::export::held::{self, Owner, ProfileStack, NO_STACK};
use crate::report::schema::{FrameReport, Report};

/// The messages of github.com/google/pprof's proto/profile.proto (field numbers from there),
/// written as prost derives: five messages do not justify a protoc build step. The agent's
/// HTTP tests build profiles with them too.
pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Which of the profile's four values a viewer shows first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSample {
    /// What is still mapped: a heap profile (`--pprof`, `/debug/pprof/heap`).
    InuseSpace,
    /// Everything allocated since the start (`/debug/pprof/allocs`).
    AllocSpace,
}

/// The gzipped profile, in-use space first.
pub fn render(report: &Report) -> std::io::Result<Vec<u8>> {
    render_as(report, DefaultSample::InuseSpace)
}

/// The gzipped profile, with `default` first.
pub fn render_as(report: &Report, default: DefaultSample) -> std::io::Result<Vec<u8>> {
    let profile = profile(report, default);
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&profile.encode_to_vec())?;
    encoder.finish()
}

fn profile(report: &Report, default: DefaultSample) -> proto::Profile {
    let mut builder = Builder::default();
    builder.string(""); // index 0 is the empty string, by the format's rule
    let bytes = builder.string("bytes");
    let count = builder.string("count");
    let sample_type = [
        "inuse_space",
        "inuse_objects",
        "alloc_space",
        "alloc_objects",
    ]
    .iter()
    .zip([bytes, count, bytes, count])
    .map(|(name, unit)| proto::ValueType {
        r#type: builder.string(name),
        unit,
    })
    .collect::<Vec<_>>();
    let (inuse_space, alloc_space) = (sample_type[0].r#type, sample_type[2].r#type);
    let space = builder.string("space");
    let comment = builder.string(&format!(
        "memtrace: memory-mapping syscalls; an object is a mapped region ({} events, source {})",
        report.events,
        report.source.as_str()
    ));
    for stack in held::profile_stacks(report) {
        builder.sample(&stack);
    }
    proto::Profile {
        sample_type,
        sample: builder.samples,
        mapping: builder.mappings,
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings,
        duration_nanos: 0,
        period_type: Some(proto::ValueType {
            r#type: space,
            unit: bytes,
        }),
        period: 1,
        comment: vec![comment],
        // The index of a type in `sample_type`, as the format says; 0 (the first) is what
        // go tool pprof reads too, so the heap profile says so explicitly as well.
        default_sample_type: match default {
            DefaultSample::InuseSpace => inuse_space,
            DefaultSample::AllocSpace => alloc_space,
        },
    }
}

/// The profile's tables, each entry interned once (ids start at 1: 0 means none).
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, String), u64>,
    /// Per owner (by its root frame's name): a module's mapping.
    mappings: Vec<proto::Mapping>,
    mapping_ids: HashMap<(String, String), u64>,
    /// Per owner and address (the same address in two processes is two places).
    locations: Vec<proto::Location>,
    location_ids: HashMap<(String, u64, String), u64>,
    samples: Vec<proto::Sample>,
}

impl Builder {
    fn string(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(text) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(text.to_string());
        self.string_ids.insert(text.to_string(), id);
        id
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.string(name),
            system_name: self.string(name),
            filename: self.string(file),
        };
        self.functions.push(function);
        self.function_ids.insert(key, id);
        id
    }

    /// The mapping of a frame's module in this process: the span of its file mappings.
    fn mapping(&mut self, owner: &Owner<'_>, module: &str) -> u64 {
        let key = (owner.label.clone(), module.to_string());
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let pieces = owner
            .layout
            .iter()
            .filter(|entry| entry.kind == "file" && entry.name == module);
        let (mut start, mut limit, mut offset) = (u64::MAX, 0, 0);
        for piece in pieces {
            if piece.start < start {
                start = piece.start;
                offset = piece.offset;
            }
            limit = limit.max(piece.end);
        }
        if start == u64::MAX {
            // The module is gone from the layout (unmapped, or replaced by an exec).
            (start, limit) = (0, 0);
        }
        let id = self.mappings.len() as u64 + 1;
        let mapping = proto::Mapping {
            id,
            memory_start: start,
            memory_limit: limit,
            file_offset: offset,
            filename: self.string(module),
            build_id: 0,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
        };
        self.mappings.push(mapping);
        self.mapping_ids.insert(key, id);
        id
    }

    /// A frame's location; `frame` `None` for a pseudo-frame named `name` (the process root,
    /// [`NO_STACK`]).
    fn location(&mut self, owner: &Owner<'_>, frame: Option<&FrameReport>, name: &str) -> u64 {
        let address = frame.map_or(0, |frame| frame.address);
        let key = (owner.label.clone(), address, name.to_string());
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let file = frame.and_then(|frame| frame.file.as_deref()).unwrap_or("");
        let function_id = self.function(name, file);
        let mapping_id = match frame.and_then(|frame| frame.module.as_deref()) {
            Some(module) => self.mapping(owner, module),
            None => 0,
        };
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address,
            line: vec![proto::Line {
                function_id,
                line: frame.and_then(|frame| frame.line).map_or(0, i64::from),
            }],
        });
        self.location_ids.insert(key, id);
        id
    }

    fn sample(&mut self, stack: &ProfileStack<'_>) {
        let owner = &stack.owner;
        // Leaf first, as pprof orders a sample's locations.
        let mut location_id: Vec<u64> = stack
            .frames
            .iter()
            .map(|frame| self.location(owner, Some(frame), &held::label(frame)))
            .collect();
        if stack.frames.is_empty() {
            location_id.push(self.location(owner, None, NO_STACK));
        }
        location_id.push(self.location(owner, None, &owner.label));
        let label = vec![
            proto::Label {
                key: self.string("pid"),
                str: 0,
                num: i64::from(owner.pid),
            },
            proto::Label {
                key: self.string("comm"),
                str: self.string(owner.comm),
                num: 0,
            },
            proto::Label {
                key: self.string("cgroup"),
                str: self.string(owner.cgroup),
                num: 0,
            },
        ];
        let value = [
            stack.inuse_bytes,
            stack.inuse_regions,
            stack.alloc_bytes,
            stack.alloc_regions,
        ]
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        .to_vec();
        self.samples.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }
}
