//! Client text quoted in error messages, cut short: an error about a megabyte-long option must
//! not itself be megabytes (six per byte once control characters are escaped).

/// Characters of client text a message quotes: enough to recognise the value.
const QUOTE_CHARS: usize = 64;

/// `text` as `{:?}` shows it, cut to its first [`QUOTE_CHARS`] characters with a note of its
/// length.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut() {
        assert_eq!(quote("conv9"), "\"conv9\"");
        let long = "\u{1}".repeat(1 << 20);
        let q = quote(&long);
        assert!(q.len() < 500, "{}", q.len());
        assert!(q.ends_with("(1048576 bytes)"));
        // Multi-byte characters are cut at a boundary.
        assert!(quote(&"é".repeat(100)).starts_with("\"éé"));
    }
}
