//! One escaping rule for every text memtrace writes where a terminal or a script reads it:
//! the text report, `--events`, `--interval`, collapsed stacks and warnings.
//!
//! The strings in them come from the traced programs and the file system (a comm set with
//! `prctl(PR_SET_NAME)`, a memfd's name, a file's name, a symbol), so a program could forge
//! lines of the report with a newline or drive root's terminal with escape sequences. As
//! strace does, such characters are shown escaped: `\n`, `\t`, `\x1b`; a backslash is doubled
//! so that an escape cannot be forged either. Characters that reorder what a terminal shows
//! (the Unicode bidirectional overrides) are escaped too. JSON and HTML have escaping of their
//! own and do not use this.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` as it is safe to print: unchanged when it holds nothing to escape (the common case,
/// without allocating).
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            '\r' => escaped.push_str("\\r"),
            c if (c as u32) < 0x100 && needs_escape(c) => {
                let _ = write!(escaped, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:04x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// C0 and C1 controls, DEL, the backslash, and the bidirectional embeddings, overrides and
/// isolates (U+202A..U+202E, U+2066..U+2069).
fn needs_escape(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f | 0x202a..=0x202e | 0x2066..=0x2069) || c == '\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "bash",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "memfd:doublemapper",
            "ünïcode 日本",
        ] {
            assert!(matches!(terminal(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn controls_are_shown_as_strace_shows_them() {
        assert_eq!(terminal("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(terminal("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(terminal("\x00\x7f"), "\\x00\\x7f");
        assert_eq!(terminal("\u{9b}2J"), "\\x9b2J");
        assert_eq!(terminal("back\\slash"), "back\\\\slash");
        assert_eq!(terminal("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }

    /// No escaped output holds a byte a terminal acts on, whatever went in.
    #[test]
    fn no_control_byte_survives() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let escaped = terminal(&all);
        assert!(!escaped
            .chars()
            .any(|c| (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32))));
        assert!(!escaped.contains('\u{202e}'));
    }
}
