//! The one escaping function for text that reaches a terminal or a log.
//!
//! Every name of a file and every string that came from a peer (error texts, problems,
//! output lines of the far side) passes [`escape`] before it is printed: printable UTF-8
//! passes; control characters (C0, DEL, C1: ESC, CSI, OSC, CR, BEL, ...), the bidirectional
//! controls that reorder what a terminal shows (U+061C, U+200E, U+200F, U+202A–U+202E,
//! U+2066–U+2069), backslashes and bytes that are not UTF-8 are written as `\xNN` / `\\`.
//! So no name and no peer can forge a line, retitle or clear the terminal, or make text
//! read backwards. The escaping is invertible ([`unescape`]).

/// Whether `c` is printed escaped: control characters and bidirectional controls.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Escapes bytes for output (see the module's documentation).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if is_unsafe(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// [`escape`] of a string (a message that came from a peer).
pub fn escape_str(s: &str) -> String {
    escape(s.as_bytes())
}

/// The bytes [`escape`] wrote `s` for; `None` for text it cannot have written.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match rest {
            [b'\\', tail @ ..] => {
                out.push(b'\\');
                rest = tail;
            }
            [b'x', h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = [*h, *l];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                rest = tail;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn unescape_inverts_escape(name in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            proptest::prop_assert_eq!(unescape(&escape(&name)), Some(name));
        }
    }

    #[test]
    fn unescape_refuses_what_escape_never_writes() {
        for bad in ["\\", "a\\x4", "\\q", "\\x+f", "\\xg0"] {
            assert_eq!(unescape(bad), None, "{bad}");
        }
    }

    #[test]
    fn escape_control_and_invalid_bytes() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape(b"a\nb"), "a\\x0ab");
        assert_eq!(escape(b"tab\there"), "tab\\x09here");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape(b"bad\xffutf8"), "bad\\xffutf8");
        assert_eq!(escape("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escape(b"esc\x1b[31m"), "esc\\x1b[31m");
    }

    #[test]
    fn terminal_controls_and_bidi_are_escaped() {
        assert_eq!(escape(b"plain name.txt"), "plain name.txt");
        assert_eq!(escape(b"a\nb\rc"), "a\\x0ab\\x0dc");
        assert_eq!(escape(b"\x1b]0;t\x07\x1b[2J"), "\\x1b]0;t\\x07\\x1b[2J");
        assert_eq!(escape("\u{9b}31m".as_bytes()), "\\xc2\\x9b31m");
        assert_eq!(escape("a\u{202e}b".as_bytes()), "a\\xe2\\x80\\xaeb");
        for c in ['\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}', '\u{200f}'] {
            let s = escape_str(&format!("x{c}y"));
            assert!(s.chars().all(|c| !is_unsafe(c)), "{s:?}");
            assert!(s.starts_with("x\\x") && s.ends_with('y'), "{s:?}");
        }
        assert_eq!(
            escape("caf\u{e9} \u{2014}".as_bytes()),
            "caf\u{e9} \u{2014}"
        );
        assert_eq!(escape(b"back\\slash\xff"), "back\\\\slash\\xff");
    }
}
