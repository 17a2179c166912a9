//! Globs over tool names: `*` (any characters), `?` (one character),
//! `[abc]`, `[a-z]`, `[!abc]` (one character of, or not of, a set) and `\`
//! to take the next character literally. Compiled once at load into the
//! cheapest matcher that fits: any name, an exact name, a prefix, a suffix,
//! or a general pattern matched without allocating.

use std::fmt;

/// A compiled tool-name glob.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Glob {
    /// `*`: every name.
    Any,
    /// No wildcard: the name itself.
    Exact(Box<str>),
    /// `literal*`, the literal not empty.
    Prefix(Box<str>),
    /// `*literal`, the literal not empty.
    Suffix(Box<str>),
    /// Anything else.
    General(Box<[Token]>),
}

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Char(char),
    AnyChar,
    Star,
    Class {
        negated: bool,
        ranges: Box<[(char, char)]>,
    },
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Char(expected) => *expected == c,
            Token::AnyChar => true,
            Token::Star => unreachable!("a star matches a run of characters"),
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(low, high)| low <= c && c <= high) != *negated
            }
        }
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Glob::Any => f.write_str("Any"),
            Glob::Exact(s) => write!(f, "Exact({s:?})"),
            Glob::Prefix(s) => write!(f, "Prefix({s:?})"),
            Glob::Suffix(s) => write!(f, "Suffix({s:?})"),
            Glob::General(tokens) => f.debug_tuple("General").field(tokens).finish(),
        }
    }
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub(super) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("it is empty".to_owned());
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::AnyChar,
                '\\' => match chars.next() {
                    Some(escaped) => Token::Char(escaped),
                    None => return Err("it ends with a lone `\\`".to_owned()),
                },
                '[' => {
                    let negated = matches!(chars.peek(), Some('!' | '^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(c) = chars.next() else {
                            return Err("a `[` is not closed by `]`".to_owned());
                        };
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let low = if c == '\\' {
                            chars
                                .next()
                                .ok_or_else(|| "a `[` is not closed by `]`".to_owned())?
                        } else {
                            c
                        };
                        let mut high = low;
                        if chars.peek() == Some(&'-') {
                            let mut lookahead = chars.clone();
                            lookahead.next();
                            match lookahead.peek() {
                                Some(']') | None => {}
                                Some(_) => {
                                    chars.next();
                                    high = chars.next().expect("peeked");
                                    if high == '\\' {
                                        high = chars.next().ok_or_else(|| {
                                            "a `[` is not closed by `]`".to_owned()
                                        })?;
                                    }
                                    if high < low {
                                        return Err(format!(
                                            "the range `{low}-{high}` is backwards; write `{high}-{low}`"
                                        ));
                                    }
                                }
                            }
                        }
                        ranges.push((low, high));
                    }
                    Token::Class {
                        negated,
                        ranges: ranges.into(),
                    }
                }
                '{' | '}' => {
                    return Err(format!(
                        "`{c}` is not supported (no `{{a,b}}` alternatives); write one rule per pattern, or `\\{c}` for the character"
                    ));
                }
                ']' => {
                    return Err(
                        "a `]` has no `[` before it; write `\\]` for the character".to_owned()
                    );
                }
                other => Token::Char(other),
            };
            tokens.push(token);
        }
        Ok(Glob::simplify(tokens))
    }

    fn simplify(tokens: Vec<Token>) -> Glob {
        let literal = |tokens: &[Token]| -> Option<Box<str>> {
            tokens
                .iter()
                .map(|token| match token {
                    Token::Char(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>()
                .map(String::into_boxed_str)
        };
        if let Some(exact) = literal(&tokens) {
            return Glob::Exact(exact);
        }
        if tokens == [Token::Star] {
            return Glob::Any;
        }
        if let [rest @ .., Token::Star] = tokens.as_slice()
            && let Some(prefix) = literal(rest)
        {
            return Glob::Prefix(prefix);
        }
        if let [Token::Star, rest @ ..] = tokens.as_slice()
            && let Some(suffix) = literal(rest)
        {
            return Glob::Suffix(suffix);
        }
        Glob::General(tokens.into())
    }

    /// Whether `name` matches.
    pub(super) fn is_match(&self, name: &str) -> bool {
        // The first (or last) byte is checked inline before the rest: most
        // rules are for other tools, and this turns them away cheaply. The
        // literals of `Exact`, `Prefix` and `Suffix` are never empty, so
        // they have a first and a last byte.
        match self {
            Glob::Any => true,
            Glob::Exact(exact) => {
                name.len() == exact.len()
                    && name.as_bytes().first() == exact.as_bytes().first()
                    && name == &**exact
            }
            Glob::Prefix(prefix) => {
                name.len() >= prefix.len()
                    && name.as_bytes().first() == prefix.as_bytes().first()
                    && name.starts_with(&**prefix)
            }
            Glob::Suffix(suffix) => {
                name.len() >= suffix.len()
                    && name.as_bytes().last() == suffix.as_bytes().last()
                    && name.ends_with(&**suffix)
            }
            Glob::General(tokens) => general_match(tokens, name),
        }
    }
}

/// Wildcard matching with one backtracking point, the last `*`: linear in
/// practice, no allocation.
fn general_match(tokens: &[Token], name: &str) -> bool {
    let mut t = 0;
    let mut n = 0;
    // After the last star seen: the token after it, and where in the name
    // the star's run ends for now.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if t < tokens.len() && tokens[t] == Token::Star {
            t += 1;
            star = Some((t, n));
            continue;
        }
        let next = name[n..].chars().next();
        match (tokens.get(t), next) {
            (Some(token), Some(c)) if token.matches_one(c) => {
                t += 1;
                n += c.len_utf8();
                continue;
            }
            (None, None) => return true,
            _ => {}
        }
        // Mismatch: let the last star swallow one more character.
        match star {
            Some((after_star, star_end)) => match name[star_end..].chars().next() {
                Some(c) => {
                    let star_end = star_end + c.len_utf8();
                    star = Some((after_star, star_end));
                    t = after_star;
                    n = star_end;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).unwrap().is_match(name)
    }

    #[test]
    fn simple_patterns_compile_to_fast_matchers() {
        assert_eq!(
            Glob::new("send_email").unwrap(),
            Glob::Exact("send_email".into())
        );
        assert_eq!(Glob::new("*").unwrap(), Glob::Any);
        assert_eq!(Glob::new("***").unwrap(), Glob::Any);
        assert_eq!(
            Glob::new("delete_*").unwrap(),
            Glob::Prefix("delete_".into())
        );
        assert_eq!(Glob::new("**_all").unwrap(), Glob::Suffix("_all".into()));
        assert_eq!(Glob::new(r"a\*").unwrap(), Glob::Exact("a*".into()));
        assert!(matches!(Glob::new("a?c").unwrap(), Glob::General(_)));
    }

    #[test]
    fn wildcards_match_as_in_shells() {
        assert!(matches("send_email", "send_email"));
        assert!(!matches("send_email", "send_emails"));
        assert!(matches("delete_*", "delete_"));
        assert!(matches("delete_*", "delete_repo"));
        assert!(!matches("delete_*", "undelete_repo"));
        assert!(matches("github.*", "github.merge_pr"));
        assert!(!matches("github.*", "githubXmerge"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything.at/all"));
        assert!(matches("**", "x"));
        assert!(matches("*_email", "send_email"));
        assert!(matches("a?c", "abc"));
        assert!(matches("a?c", "aéc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("*a*b", "ab"));
        assert!(!matches("*a*b", "abx"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("[abc]x", "bx"));
        assert!(!matches("[abc]x", "dx"));
        assert!(matches("[a-c]x", "cx"));
        assert!(matches("[!a-c]x", "dx"));
        assert!(matches("[^a-c]x", "dx"));
        assert!(!matches("[!a-c]x", "ax"));
        assert!(matches("[]]", "]"));
        assert!(matches("[a-]", "-"));
        assert!(matches(r"\[x\]", "[x]"));
        assert!(matches("*[0-9]", "tool7"));
        assert!(!matches("*[0-9]", "tool"));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        assert_eq!(Glob::new("").unwrap_err(), "it is empty");
        assert_eq!(
            Glob::new("delete_[").unwrap_err(),
            "a `[` is not closed by `]`"
        );
        assert_eq!(Glob::new("a\\").unwrap_err(), "it ends with a lone `\\`");
        assert_eq!(
            Glob::new("[z-a]").unwrap_err(),
            "the range `z-a` is backwards; write `a-z`"
        );
        assert_eq!(
            Glob::new("{a,b}").unwrap_err(),
            "`{` is not supported (no `{a,b}` alternatives); write one rule per pattern, or `\\{` for the character"
        );
        assert_eq!(
            Glob::new("a]").unwrap_err(),
            "a `]` has no `[` before it; write `\\]` for the character"
        );
    }
}
