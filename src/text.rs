//! Untrusted text in messages and logs.
//!
//! Container ids, pod and container names and annotation keys come from
//! whoever starts the container. Printed raw, a newline would forge a
//! second log line and an escape sequence would repaint the operator's
//! terminal; so every such value goes through [`untrusted`] before it is
//! shown. Pure.

use std::borrow::Cow;

/// Longest value shown; beyond it the text is cut and marked, so a
/// megabyte-long "name" cannot flood a log line.
pub const MAX_SHOWN: usize = 256;

/// `text` with control characters (C0, DEL, C1), bidirectional overrides and
/// other invisible format characters written as `\u{…}` escapes, and cut at
/// [`MAX_SHOWN`] characters. Borrowed when nothing needed changing.
pub fn untrusted(text: &str) -> Cow<'_, str> {
    let clean = text.len() <= MAX_SHOWN && !text.chars().any(needs_escape);
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN) + 16);
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN {
            out.push('…');
            break;
        }
        if needs_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}'   // zero-width and direction marks
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{2069}' // word joiner, bidi isolates
            | '\u{feff}')
}

/// A command-line value that must not be empty (a clap value parser).
pub fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            untrusted("3f2a0c1d-app_1.x"),
            Cow::Borrowed("3f2a0c1d-app_1.x")
        ));
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(untrusted("a\nb"), "a\\u{a}b");
        assert_eq!(untrusted("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(untrusted("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(untrusted("del\u{7f}"), "del\\u{7f}");
        assert_eq!(untrusted("c1\u{9b}"), "c1\\u{9b}");
        assert_eq!(untrusted("ünïcödé"), "ünïcödé");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "a".repeat(MAX_SHOWN + 10);
        let shown = untrusted(&long);
        assert_eq!(shown.chars().count(), MAX_SHOWN + 1);
        assert!(shown.ends_with('…'));
    }
}
