//! What text from outside may hold when a person will read it back: no control characters, and
//! no invisible characters that change how the rest is shown (issue 18 §8).
//!
//! A device names itself (`device_name`, `os`, `hostname`), and people name clients, users and
//! devices. Escaping keeps markup out of the pages, but not U+202E RIGHT-TO-LEFT OVERRIDE
//! (which shows `moc.elgoog` as `google.com`), U+200B ZERO WIDTH SPACE (two names that look
//! the same but differ) and their kin: with them a device could make the approval page show
//! something other than what it sent. They have no place in a name, so every front end refuses
//! them, naming the field and the character.
//!
//! Refused: the Unicode general categories Cc (controls), Cf (format characters: bidi
//! controls, zero-width characters, tags and the rest), Zl and Zp (line and paragraph
//! separators). A consequence, accepted: emoji sequences joined by U+200D ZERO WIDTH JOINER
//! (Cf) are refused too; single emoji are fine.

/// The code points of General_Category=Cf, from `extracted/DerivedGeneralCategory.txt` of
/// Unicode 17.0.0 (the same 170 code points as 15.1 and 16.0), inclusive ranges.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x0600, 0x0605),   // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x06DD, 0x06DD),   // ARABIC END OF AYAH
    (0x070F, 0x070F),   // SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),   // ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
    (0x08E2, 0x08E2),   // ARABIC DISPUTED END OF AYAH
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE
    (0xFFF9, 0xFFFB),   // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
    (0x110BD, 0x110BD), // KAITHI NUMBER SIGN
    (0x110CD, 0x110CD), // KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F), // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..UP STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
];

/// Whether `c` is a format character (General_Category=Cf).
pub fn is_format(c: char) -> bool {
    let c = u32::from(c);
    // Nothing below U+00AD is Cf: the common case (ASCII) costs one comparison.
    c >= 0xAD
        && FORMAT
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// Whether `c` may not appear in a name a person reads: Cc, Cf, Zl or Zp.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c) || c == '\u{2028}' || c == '\u{2029}'
}

/// The first character `s` may not hold, if any.
pub fn first_hidden(s: &str) -> Option<char> {
    s.chars().find(|&c| is_hidden(c))
}

/// Why `s` is refused, for a message about `what` (e.g. "`device_name`"), or `None` if it is
/// fine: "`device_name` must not contain invisible or control characters (found U+202E)".
pub fn hidden_refusal(what: &str, s: &str) -> Option<String> {
    first_hidden(s).map(|c| {
        format!(
            "{what} must not contain invisible or control characters (found U+{:04X})",
            u32::from(c)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint_and_holds_170_code_points() {
        let mut total = 0;
        for w in FORMAT.windows(2) {
            assert!(w[0].1 < w[1].0, "{:X?}", w);
        }
        for &(lo, hi) in FORMAT {
            assert!(lo <= hi);
            total += hi - lo + 1;
        }
        assert_eq!(
            total, 170,
            "DerivedGeneralCategory.txt: Cf total code points"
        );
    }

    #[test]
    fn format_characters_are_found_and_letters_pass() {
        for c in [
            '\u{AD}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{1343F}',
            '\u{0605}',
        ] {
            assert!(is_format(c), "{:X}", u32::from(c));
            assert!(is_hidden(c));
        }
        for c in [
            'a', 'Z', ' ', 'é', 'ß', '中', '🖥', '\u{AC}', '\u{AE}', '\u{2065}', '\u{2070}',
        ] {
            assert!(!is_format(c), "{:X}", u32::from(c));
        }
        for c in ['\0', '\n', '\t', '\u{7F}', '\u{85}', '\u{2028}', '\u{2029}'] {
            assert!(is_hidden(c), "{:X}", u32::from(c));
        }
        assert_eq!(first_hidden("moc.elgoog\u{202E}"), Some('\u{202E}'));
        assert_eq!(first_hidden("living-room TV 📺"), None);
        assert_eq!(
            hidden_refusal("`os`", "li\u{200B}nux").as_deref(),
            Some("`os` must not contain invisible or control characters (found U+200B)")
        );
    }
}
