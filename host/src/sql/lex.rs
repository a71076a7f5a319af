//! The lexer: the only place that knows how SQL quotes and comments text. Strings (`'..'`,
//! `E'..'` with backslash escapes), quoted identifiers, dollar quotes and comments (`--`,
//! nested `/* */`) are skipped whole, so a `;` or a keyword inside them is never taken for
//! a statement boundary or a word. Tokens are slices of the input: nothing is allocated
//! while lexing.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword, an unquoted identifier (dots included: `pg_catalog.nextval` is one word)
    /// or a number.
    Word,
    /// `"..."`
    QuotedIdent,
    /// `'...'` (an `E`, `N`, `U&` or `B` prefix is the word before it).
    String,
    /// `$tag$...$tag$`, or a lone `$` (as in `$1`).
    Dollar,
    /// Any other single byte: `(`, `)`, `,`, `;`, operators.
    Punct,
}

/// One token of a statement: a slice of the input.
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a [u8],
}

impl Token<'_> {
    /// The word `word` (ASCII, lower case), in any case.
    pub fn is(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(word.as_bytes())
    }

    /// The punctuation byte `c`.
    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == TokenKind::Punct && self.text[0] == c
    }
}

/// The tokens of `sql` in order, comments and whitespace skipped; `;` is a `Punct` token.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    unterminated: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self {
            sql,
            pos: 0,
            unterminated: false,
        }
    }

    /// Byte offset of the next token (or of the whitespace or comment before it).
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Steps back before `tok`, the token just returned, so that it is returned again.
    pub fn put_back(&mut self, tok: Token<'a>) {
        self.pos = tok.text.as_ptr() as usize - self.sql.as_ptr() as usize;
    }

    /// Whether a string, quoted identifier, dollar quote or block comment ran to the end of
    /// the input without being closed: the text is not SQL the server would accept.
    pub fn unterminated(&self) -> bool {
        self.unterminated
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let sql = self.sql;
        loop {
            let i = self.pos;
            let c = *sql.get(i)?;
            let (kind, end) = if c.is_ascii_whitespace() {
                self.pos += 1;
                continue;
            } else if c == b'-' && sql.get(i + 1) == Some(&b'-') {
                self.pos = line_comment_end(sql, i);
                continue;
            } else if c == b'/' && sql.get(i + 1) == Some(&b'*') {
                let end = block_comment_end(sql, i);
                self.unterminated |= end.is_none();
                self.pos = end.unwrap_or(sql.len());
                continue;
            } else if c == b'\'' || c == b'"' {
                let end = quoted_end(sql, i);
                self.unterminated |= end.is_none();
                let kind = if c == b'"' {
                    TokenKind::QuotedIdent
                } else {
                    TokenKind::String
                };
                (kind, end.unwrap_or(sql.len()))
            } else if c == b'$' {
                let end = dollar_quote_end(sql, i);
                self.unterminated |= end.is_none();
                (TokenKind::Dollar, end.unwrap_or(sql.len()).max(i + 1))
            } else if is_word_start(c) {
                (TokenKind::Word, word_end(sql, i + 1))
            } else {
                (TokenKind::Punct, i + 1)
            };
            self.pos = end;
            return Some(Token {
                kind,
                text: &sql[i..end],
            });
        }
    }
}

const WORD_START: u8 = 1;
const IN_WORD: u8 = 2;
/// Whitespace, and operator bytes that never start a quote, a comment or a parenthesis.
const PLAIN: u8 = 4;

/// Byte classes, looked up once a byte.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            t[i] = WORD_START | IN_WORD;
        } else if c == b'.' {
            t[i] = IN_WORD | PLAIN;
        } else if c.is_ascii_whitespace()
            || matches!(c, b'=' | b'<' | b'>' | b',' | b'*' | b'+' | b'%' | b':')
        {
            t[i] = PLAIN;
        }
        i += 1;
    }
    t
};

/// The fast path for the common statement: calls `word` on each word of `sql` in order, as
/// long as the text is plain (words, whitespace, `$n` parameters, operator bytes and at most
/// a last `;`: no string, quoted identifier, dollar quote, comment or parenthesis) and `word`
/// returns true. True if it read the whole text so; false as soon as it is not plain (then
/// the caller reads it with [`Lexer`]). One look at each byte, nothing allocated.
pub fn plain_words(sql: &[u8], mut word: impl FnMut(&[u8]) -> bool) -> bool {
    let n = sql.len();
    let mut i = 0;
    while i < n {
        let c = sql[i];
        let class = CLASS[c as usize];
        if class & WORD_START != 0 {
            let start = i;
            i = word_end(sql, i + 1);
            if !word(&sql[start..i]) {
                return false;
            }
            continue;
        }
        if class & PLAIN == 0 {
            let next = sql.get(i + 1).copied();
            match c {
                b'$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                    i += 1;
                    while i + 1 < n && sql[i + 1].is_ascii_digit() {
                        i += 1;
                    }
                }
                b'-' if next != Some(b'-') => {}
                b'/' if next != Some(b'*') => {}
                b';' => return sql[i + 1..].iter().all(u8::is_ascii_whitespace),
                _ => return false,
            }
        }
        i += 1;
    }
    true
}

fn is_word_start(c: u8) -> bool {
    CLASS[c as usize] & WORD_START != 0
}

/// The index of the first byte at or after `i` that is not in a word.
fn word_end(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && CLASS[sql[i] as usize] & IN_WORD != 0 {
        i += 1;
    }
    i
}

/// Byte ranges of statements, split at top-level semicolons (ignoring empty ones).
pub fn split_statements(sql: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut lexer = Lexer::new(sql);
    let mut start = 0;
    let mut empty = true;
    while let Some(tok) = lexer.next() {
        if tok.is_punct(b';') {
            if !empty {
                out.push(&sql[start..lexer.offset() - 1]);
            }
            start = lexer.offset();
            empty = true;
        } else {
            empty = false;
        }
    }
    if !empty {
        out.push(&sql[start..]);
    }
    out
}

/// Words, quoted strings and punctuation of one statement, comments removed.
pub fn tokens(stmt: &[u8]) -> Vec<&[u8]> {
    Lexer::new(stmt).map(|t| t.text).collect()
}

/// The bodies of the comments before the first token of `sql` (`/* x */` gives ` x `,
/// `-- x` gives ` x`), in order.
pub fn leading_comments(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let c = *sql.get(i)?;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && sql.get(i + 1) == Some(&b'-') {
            let end = line_comment_end(sql, i);
            let body = &sql[i + 2..end];
            i = end;
            return Some(body.strip_suffix(b"\n").unwrap_or(body));
        } else if c == b'/' && sql.get(i + 1) == Some(&b'*') {
            let end = block_comment_end(sql, i)?;
            let body = &sql[i + 2..end - 2];
            i = end;
            return Some(body);
        } else {
            return None;
        }
    })
}

fn line_comment_end(sql: &[u8], i: usize) -> usize {
    sql[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(sql.len(), |p| i + p + 1)
}

/// Index after a quoted string or identifier starting at `i` ('' and "" are escapes,
/// `E'..'` backslashes); `None` if it is not closed.
fn quoted_end(sql: &[u8], i: usize) -> Option<usize> {
    let quote = sql[i];
    let escapes = quote == b'\'' && i > 0 && matches!(sql[i - 1], b'e' | b'E');
    let mut j = i + 1;
    while j < sql.len() {
        if escapes && sql[j] == b'\\' {
            j += 2;
            continue;
        }
        if sql[j] == quote {
            if sql.get(j + 1) == Some(&quote) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// Index after a (nested) block comment starting at `i`; `None` if it is not closed.
fn block_comment_end(sql: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0;
    let mut j = i;
    while j + 1 < sql.len() {
        if sql[j] == b'/' && sql[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if sql[j] == b'*' && sql[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Some(j);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// Index after `$tag$ ... $tag$` starting at `i`; `i + 1` for a `$` that does not open a
/// dollar quote (e.g. `$1`); `None` for one that is not closed.
fn dollar_quote_end(sql: &[u8], i: usize) -> Option<usize> {
    let Some(p) = sql[i + 1..].iter().position(|&c| !is_word_start(c)) else {
        // `$1` or `$word` at the very end: one token, like a word.
        return Some(sql.len());
    };
    let tag_end = i + 1 + p;
    if sql[tag_end] != b'$' || sql.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        return Some(i + 1);
    }
    let tag = &sql[i..=tag_end];
    let body = tag_end + 1;
    sql[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|p| body + p + tag.len())
}

/// Whether `tok` is the word `word`, in any case.
pub fn is(tok: Option<&&[u8]>, word: &str) -> bool {
    tok.is_some_and(|t| t.eq_ignore_ascii_case(word.as_bytes()))
}

/// A name as Postgres folds it: unquoted identifiers lower-cased, quoted ones verbatim.
pub fn ident(tok: &[u8]) -> String {
    if tok.len() >= 2 && tok[0] == b'"' {
        String::from_utf8_lossy(&tok[1..tok.len() - 1]).replace("\"\"", "\"")
    } else {
        String::from_utf8_lossy(tok).to_ascii_lowercase()
    }
}

/// `pg_catalog.f` → `f`.
pub fn unqualified(tok: &[u8]) -> &[u8] {
    match tok.iter().rposition(|&c| c == b'.') {
        Some(p) if tok.first() != Some(&b'"') => &tok[p + 1..],
        _ => tok,
    }
}

/// Whether token `b` starts right where token `a` ends in the statement.
pub fn adjacent(a: &[u8], b: &[u8]) -> bool {
    a.as_ptr().wrapping_add(a.len()) == b.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_ignore_quotes_and_comments() {
        assert_eq!(split_statements(b"SELECT ';SET a=1'; SET b = 2").len(), 2);
        assert_eq!(split_statements(b"SELECT $$;$$; SELECT $x$ ; $x$").len(), 2);
        assert_eq!(split_statements(b"/* ; */ SELECT 1 -- ;\n").len(), 1);
        assert_eq!(split_statements(b"SELECT \"a;b\"").len(), 1);
        assert_eq!(split_statements(b";;  ;").len(), 0);
        assert_eq!(
            split_statements(b"SELECT $1; SELECT 2"),
            [&b"SELECT $1"[..], b" SELECT 2"]
        );
        assert_eq!(split_statements(b"SELECT E'\\';' ; SET x = 1")[1], b" SET x = 1");
        assert_eq!(split_statements(b"/* a /* nested ; */ b */ SELECT 1").len(), 1);
    }

    #[test]
    fn token_kinds() {
        let kinds: Vec<(TokenKind, &[u8])> = Lexer::new(b"SELECT \"a\"\"b\", 'it''s', $q$x$q$, $1 -- c\n")
            .map(|t| (t.kind, t.text))
            .collect();
        use TokenKind::*;
        assert_eq!(
            kinds,
            [
                (Word, &b"SELECT"[..]),
                (QuotedIdent, b"\"a\"\"b\""),
                (Punct, b","),
                (String, b"'it''s'"),
                (Punct, b","),
                (Dollar, b"$q$x$q$"),
                (Punct, b","),
                (Dollar, b"$"),
                (Word, b"1"),
            ]
        );
    }

    #[test]
    fn unterminated_text_is_noticed() {
        for s in [
            "SELECT 'x",
            "SELECT \"x",
            "SELECT $$x",
            "SELECT 1 /* x",
            "SELECT E'\\'",
        ] {
            let mut lexer = Lexer::new(s.as_bytes());
            lexer.by_ref().for_each(drop);
            assert!(lexer.unterminated(), "{s}");
        }
        let mut lexer = Lexer::new(b"SELECT 'x', $1, $$y$$ -- z");
        lexer.by_ref().for_each(drop);
        assert!(!lexer.unterminated());
    }

    #[test]
    fn plain_words_only_for_plain_text() {
        let words = |sql: &str| {
            let mut out = Vec::new();
            plain_words(sql.as_bytes(), |w| {
                out.push(String::from_utf8_lossy(w).into_owned());
                true
            })
            .then_some(out)
        };
        assert_eq!(
            words("SELECT a.b, c FROM t WHERE x >= $12 - 1.5 / 2;\n"),
            Some(
                ["SELECT", "a.b", "c", "FROM", "t", "WHERE", "x", "1.5", "2"]
                    .map(String::from)
                    .to_vec()
            )
        );
        for not_plain in [
            "SELECT 'x'",
            "SELECT \"x\"",
            "SELECT $$x$$",
            "SELECT f(1)",
            "SELECT 1; SELECT 2",
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT $a",
        ] {
            assert_eq!(words(not_plain), None, "{not_plain}");
        }
        assert!(!plain_words(b"SELECT 1", |w| w != b"1"));
    }

    #[test]
    fn comments_before_the_first_token() {
        let c: Vec<&[u8]> = leading_comments(b" /* a */ -- b\n/* c */ SELECT /* d */ 1").collect();
        assert_eq!(c, [&b" a "[..], b" b", b" c "]);
        assert_eq!(leading_comments(b"SELECT 1 /* a */").count(), 0);
        assert_eq!(leading_comments(b"/* open").count(), 0);
    }
}
