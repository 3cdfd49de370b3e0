//! A validating scan of a JSON object that builds nothing: it decides whether the `json`
//! processor may keep a line's object undecoded (see `Event::set_raw_fields`).
//!
//! It accepts a strict subset of what serde_json decodes and answers `None` for everything
//! else, so the caller then decodes with serde_json as before and keeps its exact behaviour
//! (error messages included). Outside the subset: `\u` escapes (surrogate rules), escaped
//! keys, numbers with an exponent or over 300 digits (range rules), nesting deeper than the
//! configured `max_depth` or [`DEPTH_CAP`], a duplicate key at any level (a tree keeps the
//! last, splicing would keep both), an object of more than [`MAX_KEYS`] keys, and a line
//! break between tokens inside the object (the text is spliced into line-based formats).
//! Property tests check that whatever it accepts, serde_json decodes, and that every object
//! serde_json writes is accepted; the `json` fuzz target runs it through the processor.

/// Nesting accepted on the fast path, well under serde_json's own recursion limit (128).
const DEPTH_CAP: usize = 64;
/// Keys per object checked for duplicates pairwise; wider objects are decoded.
const MAX_KEYS: usize = 64;
/// Digits per number; longer ones may overflow an f64, which serde_json refuses.
const MAX_DIGITS: usize = 300;

/// Decides whether a top-level key may stay undecoded.
pub type KeyCheck<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// Reusable state: the key spans of the objects being scanned (one processor, one thread).
#[derive(Default)]
pub struct Scanner {
    keys: Vec<(usize, usize)>,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// Blanks between tokens inside the object: space and tab only (see the module doc).
    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// A string starting at `"`: its content span and whether it holds an escape.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the next `"`, `\` or control character.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let mask = crate::event::escape_mask8(u64::from_le_bytes(word));
                if mask == 0 {
                    self.i += 8;
                } else {
                    self.i += (mask.trailing_zeros() / 8) as usize;
                    break;
                }
            }
            match self.bump()? {
                b'"' => return Some((start, self.i - 1, escaped)),
                b'\\' => {
                    // `\u` is left to serde_json (lone surrogates are errors there).
                    if !matches!(
                        self.bump()?,
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
                    ) {
                        return None;
                    }
                    escaped = true;
                }
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - from
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; an exponent is left to serde_json.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int = match self.peek()? {
            b'0' => {
                self.i += 1;
                1
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        };
        let mut frac = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            frac = self.digits();
            if frac == 0 {
                return None;
            }
        }
        if int + frac > MAX_DIGITS || matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }
}

impl Scanner {
    /// The span of the object in `text` (from `{` to `}`) when `text` is one JSON object of
    /// the subset described in the module doc, nesting at most `max_depth` levels (1 = flat),
    /// and every top-level key passes `key_ok`; `None` otherwise.
    pub fn object_span(
        &mut self,
        text: &[u8],
        max_depth: usize,
        key_ok: KeyCheck<'_>,
    ) -> Option<(usize, usize)> {
        self.keys.clear();
        let mut c = Cursor { b: text, i: 0 };
        // Around the object any JSON whitespace will do (a CRLF line keeps its `\r`).
        while matches!(c.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            c.i += 1;
        }
        if c.peek() != Some(b'{') {
            return None;
        }
        let start = c.i;
        self.object(&mut c, max_depth.min(DEPTH_CAP), Some(key_ok))?;
        let end = c.i;
        while matches!(c.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            c.i += 1;
        }
        (c.i == text.len()).then_some((start, end))
    }

    fn value(&mut self, c: &mut Cursor<'_>, depth_left: usize) -> Option<()> {
        match c.peek()? {
            b'{' => self.object(c, depth_left, None),
            b'[' => self.array(c, depth_left),
            b'"' => c.string().map(|_| ()),
            b't' => c.literal(b"true"),
            b'f' => c.literal(b"false"),
            b'n' => c.literal(b"null"),
            b'-' | b'0'..=b'9' => c.number(),
            _ => None,
        }
    }

    fn object(
        &mut self,
        c: &mut Cursor<'_>,
        depth_left: usize,
        mut key_ok: Option<KeyCheck<'_>>,
    ) -> Option<()> {
        if depth_left == 0 {
            return None;
        }
        c.i += 1;
        c.blanks();
        if c.peek()? == b'}' {
            c.i += 1;
            return Some(());
        }
        let first = self.keys.len();
        loop {
            if c.peek()? != b'"' {
                return None;
            }
            let (ks, ke, escaped) = c.string()?;
            let key = &c.b[ks..ke];
            if escaped || key_ok.as_mut().is_some_and(|ok| !ok(key)) {
                return None;
            }
            let siblings = &self.keys[first..];
            if siblings.len() >= MAX_KEYS || siblings.iter().any(|&(s, e)| &c.b[s..e] == key) {
                return None;
            }
            self.keys.push((ks, ke));
            c.blanks();
            if c.bump()? != b':' {
                return None;
            }
            c.blanks();
            self.value(c, depth_left - 1)?;
            c.blanks();
            match c.bump()? {
                b',' => c.blanks(),
                b'}' => break,
                _ => return None,
            }
        }
        self.keys.truncate(first);
        Some(())
    }

    fn array(&mut self, c: &mut Cursor<'_>, depth_left: usize) -> Option<()> {
        if depth_left == 0 {
            return None;
        }
        c.i += 1;
        c.blanks();
        if c.peek()? == b']' {
            c.i += 1;
            return Some(());
        }
        loop {
            self.value(c, depth_left - 1)?;
            c.blanks();
            match c.bump()? {
                b',' => c.blanks(),
                b']' => return Some(()),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn span(text: &str, depth: usize) -> Option<(usize, usize)> {
        Scanner::default().object_span(text.as_bytes(), depth, &mut |_| true)
    }

    #[test]
    fn accepts_the_common_shapes() {
        for t in [
            r#"{}"#,
            r#"{"a":1,"b":"x","c":[1,2.5,-0.25,true,false,null],"d":{"e":{}}}"#,
            r#"  { "a" : "q\"uo\\te\/\n\t" , "b":[ ] }  "#,
            "{\"a\":\"é✓\"}\r\n",
        ] {
            let (s, e) = span(t, 32).unwrap_or_else(|| panic!("refused {t}"));
            assert_eq!(&t[s..s + 1], "{");
            assert_eq!(&t[e - 1..e], "}");
            assert!(serde_json::from_str::<Value>(&t[s..e]).is_ok());
        }
    }

    #[test]
    fn leaves_the_rest_to_serde() {
        for t in [
            "",
            "[1]",
            r#""s""#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e5}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a\n":1}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"o":{"k":1,"k":2}}"#,
            "{\"a\":\n1}",
            "{\"a\":\"tab\tin string\"}",
            r#"{"a":tru}"#,
            r#"{"a" 1}"#,
            r#"{"a":[1 2]}"#,
        ] {
            assert_eq!(span(t, 32), None, "accepted {t:?}");
        }
    }

    #[test]
    fn depth_and_keys() {
        assert!(span(r#"{"a":1}"#, 1).is_some());
        assert!(span(r#"{"a":{}}"#, 1).is_none());
        assert!(span(r#"{"a":[[1]]}"#, 3).is_some());
        assert!(span(r#"{"a":[[1]]}"#, 2).is_none());
        let mut seen = Vec::new();
        let ok = Scanner::default().object_span(br#"{"a":{"message":1},"b":2}"#, 8, &mut |k| {
            seen.push(String::from_utf8_lossy(k).into_owned());
            k != b"message"
        });
        assert!(ok.is_some(), "only top-level keys are checked");
        assert_eq!(seen, ["a", "b"]);
        // Siblings may repeat a cousin's name.
        assert!(span(r#"{"a":{"k":1},"b":{"k":2},"k":3}"#, 8).is_some());
    }

    proptest::proptest! {
        /// Whatever the scan accepts, serde_json decodes to an object.
        #[test]
        fn accepted_means_serde_decodes(s in r#"[ {}\[\]":,a-c0-9.\-\\ntruefalsenul]{0,40}"#) {
            if let Some((a, b)) = span(&s, 32) {
                let v = serde_json::from_str::<Value>(&s[a..b]);
                proptest::prop_assert!(matches!(v, Ok(Value::Object(_))), "{:?} {:?}", s, v);
                proptest::prop_assert!(serde_json::from_str::<Value>(&s).is_ok());
            }
        }

        /// Every object serde_json produces, written compactly or pretty, is accepted.
        #[test]
        fn serde_output_is_accepted(v in arb_object()) {
            let text = serde_json::to_string(&v).unwrap_or_default();
            proptest::prop_assert!(span(&text, 32).is_some(), "{}", text);
        }
    }

    fn arb_object() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 \"\\\\/é\t]{0,12}".prop_map(Value::String),
        ];
        let tree = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[a-z]{1,4}", tree, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }
}
