//! Colours and patterns per region kind. The colours are Okabe and Ito's palette, told apart
//! with the common kinds of colour blindness; each kind also has its own fill pattern and
//! every chart labels its kinds in words, so colour is never the only cue.

/// The kinds in the order charts stack and list them.
pub(crate) const KINDS: [&str; 8] = [
    "file",
    "anon",
    "heap",
    "memfd",
    "shared-anon",
    "stack",
    "vdso",
    "other",
];

/// `(colour, what the pattern draws over it)`.
fn style(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "file" => ("#0072B2", ""),
        "anon" => (
            "#E69F00",
            r##"<path d="M0 6L6 0" stroke="#000" stroke-opacity=".45" stroke-width="1.2"/>"##,
        ),
        "heap" => (
            "#D55E00",
            r##"<path d="M0 0L6 6M0 6L6 0" stroke="#fff" stroke-opacity=".6" stroke-width="1"/>"##,
        ),
        "memfd" => (
            "#CC79A7",
            r##"<circle cx="3" cy="3" r="1.3" fill="#000" fill-opacity=".5"/>"##,
        ),
        "shared-anon" => (
            "#56B4E9",
            r##"<path d="M3 0V6" stroke="#000" stroke-opacity=".4" stroke-width="1.2"/>"##,
        ),
        "stack" => (
            "#009E73",
            r##"<path d="M0 3H6" stroke="#fff" stroke-opacity=".7" stroke-width="1.2"/>"##,
        ),
        "vdso" => ("#F0E442", ""),
        _ => (
            "#999999",
            r##"<path d="M0 0L6 6" stroke="#000" stroke-opacity=".4" stroke-width="1"/>"##,
        ),
    }
}

/// A fill for SVG: the kind's pattern (defined once by [`defs`]).
pub(crate) fn fill(kind: &str) -> String {
    format!("url(#kind-{})", slug(kind))
}

/// The kind's plain colour (lines, text swatches).
pub(crate) fn colour(kind: &str) -> &'static str {
    style(kind).0
}

fn slug(kind: &str) -> &str {
    if KINDS.contains(&kind) {
        kind
    } else {
        "other"
    }
}

/// A hidden SVG defining every kind's pattern, referenced by the charts of the page.
pub(crate) fn defs() -> String {
    let mut out = String::from(
        r#"<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>"#,
    );
    for kind in KINDS {
        let (colour, overlay) = style(kind);
        out.push_str(&format!(
            r#"<pattern id="kind-{kind}" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="{colour}"/>{overlay}</pattern>"#
        ));
    }
    out.push_str("</defs></svg>");
    out
}

/// A legend entry: the swatch and the kind's name.
pub(crate) fn legend(kinds: &[&str]) -> String {
    let mut out = String::from(r#"<div class="legend">"#);
    for kind in kinds {
        out.push_str(&format!(
            r##"<span><svg width="14" height="14" aria-hidden="true"><rect width="14" height="14" fill="{}" stroke="#333" stroke-width=".5"/></svg>{kind}</span>"##,
            fill(kind)
        ));
    }
    out.push_str("</div>");
    out
}
