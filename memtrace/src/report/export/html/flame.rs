//! The icicle graph of unreleased bytes by call stack (the process at the top, the leaking
//! call site at the bottom), drawn by inferno from the same collapsed stacks `--folded`
//! writes. Static: no script, every frame names itself and shows its bytes on hover.

use inferno::flamegraph::{self, color, Direction, Options, Palette};

/// The SVG element (without the XML prolog, to sit inside the page), or `None` when the
/// process holds nothing.
pub(crate) fn render(lines: &[&str]) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut options = Options::default();
    options.title = String::new();
    options.count_name = "bytes".into();
    options.name_type = "Frame:".into();
    options.direction = Direction::Inverted;
    options.no_javascript = true;
    options.hash = true;
    options.deterministic = true;
    options.image_width = Some(1200);
    options.font_type = "system-ui, sans-serif".into();
    // Frame colour carries no meaning here (names and widths do): one calm hue, so no reader
    // looks for a colour code.
    options.colors = Palette::Basic(color::BasicPalette::Aqua);
    options.bgcolors = Some(color::BackgroundColor::Flat(color::Color {
        r: 255,
        g: 255,
        b: 255,
    }));
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().copied(), &mut svg).ok()?;
    let svg = String::from_utf8(svg).ok()?;
    let element = &svg[svg.find("<svg")?..];
    // inferno names its script's entry point even when it leaves the script out.
    let element = element.replacen(r#" onload="init(evt)""#, "", 1);
    Some(element.replacen("<svg ", r#"<svg class="chart flame" "#, 1))
}
