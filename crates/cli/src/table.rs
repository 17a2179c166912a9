//! How listings and reports reach a person or a script: aligned tables
//! (bold headers on a terminal, plain when piped), times as ages or RFC
//! 3339, `--json`, and writing to standard output without panicking when
//! the reader goes away.
//!
//! Every text that came from a model, a tool or a store goes through
//! [`clean`] before it reaches a terminal: a tool call's arguments must not
//! be able to move the cursor or recolour what a person is approving.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use serde::Serialize;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// How far a flexible column shrinks before optional columns are left out.
const COMFORTABLE_FLEX_WIDTH: usize = 32;
/// How far a flexible column shrinks, at most, to fit the terminal.
const MIN_FLEX_WIDTH: usize = 16;

/// Where the output goes, and so how it looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// Standard output is a terminal: ages instead of timestamps, words
    /// for empty listings, tables fitted to its width.
    pub(crate) terminal: bool,
    /// Bold headers: a terminal, and `NO_COLOR` unset (or empty).
    pub(crate) color: bool,
    /// The terminal's width in columns, when known.
    pub(crate) width: Option<usize>,
}

impl Style {
    /// The style of standard output.
    pub(crate) fn detect() -> Style {
        let terminal = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let width = terminal.then(terminal_width).flatten();
        Style {
            terminal,
            color: terminal && !no_color,
            width,
        }
    }

    /// Plain text: what a pipe gets.
    #[cfg(test)]
    pub(crate) fn plain() -> Style {
        Style {
            terminal: false,
            color: false,
            width: None,
        }
    }

    /// `text` in bold, when colour is on.
    pub(crate) fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// A time as this output shows it: `5m ago` (with the time itself
    /// when it is more than a day away) on a terminal, RFC 3339 otherwise.
    pub(crate) fn time(&self, ms: i64, now: i64) -> String {
        if self.terminal {
            age(ms, now)
        } else {
            toolgate::time::format_millis(ms)
        }
    }

    /// A time with its age on a terminal (`2026-11-22T20:30:00Z (5m ago)`),
    /// RFC 3339 alone otherwise: for reports, where the exact time matters.
    pub(crate) fn time_exact(&self, ms: i64, now: i64) -> String {
        let exact = toolgate::time::format_millis(ms);
        if self.terminal {
            format!("{exact} ({})", age(ms, now))
        } else {
            exact
        }
    }
}

/// `COLUMNS` when it is set to a number (as shells and tests set it), else
/// the terminal's own size.
fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.trim().parse::<usize>().ok())
        .filter(|columns| *columns > 0)
    {
        return Some(columns);
    }
    terminal_size::terminal_size().map(|(width, _)| usize::from(width.0))
}

/// How long ago `ms` was at `now` (`just now`, `42s ago`, `5m ago`, `3h
/// ago`, `2d ago`), or how far ahead it is (`in 5m`).
pub(crate) fn age(ms: i64, now: i64) -> String {
    let (seconds, future) = if ms <= now {
        ((now - ms) / 1000, false)
    } else {
        ((ms - now + 999) / 1000, true)
    };
    let span = match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    match (future, seconds) {
        (false, 0..=4) => "just now".to_owned(),
        (false, _) => format!("{span} ago"),
        (true, _) => format!("in {span}"),
    }
}

/// A column of a [`Table`].
#[derive(Debug, Clone)]
pub(crate) struct Column {
    header: &'static str,
    max: Option<usize>,
    min: usize,
    flex: bool,
    optional: bool,
    right: bool,
}

/// A column headed `header`: as wide as its widest cell.
pub(crate) fn column(header: &'static str) -> Column {
    Column {
        header,
        max: None,
        min: 0,
        flex: false,
        optional: false,
        right: false,
    }
}

impl Column {
    /// Cells wider than `width` are cut, ending in `…`.
    pub(crate) fn max(mut self, width: usize) -> Column {
        self.max = Some(width);
        self
    }

    /// At least `width` wide, so that tables printed page by page line up.
    pub(crate) fn min(mut self, width: usize) -> Column {
        self.min = width;
        self
    }

    /// The column that gives up width when the table is wider than the
    /// terminal.
    pub(crate) fn flex(mut self) -> Column {
        self.flex = true;
        self
    }

    /// Left out, rightmost first, when the table is wider than the
    /// terminal even with its flexible columns narrowed.
    pub(crate) fn optional(mut self) -> Column {
        self.optional = true;
        self
    }

    /// Aligned to the right (numbers).
    pub(crate) fn right(mut self) -> Column {
        self.right = true;
        self
    }
}

/// A table: a header and rows of cells, aligned by display width.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns and no rows.
    pub(crate) fn new(columns: impl IntoIterator<Item = Column>) -> Table {
        Table {
            columns: columns.into_iter().collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are cleaned of control characters. Missing cells
    /// are empty; extra ones are an error of the caller.
    pub(crate) fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells
            .into_iter()
            .map(|cell| one_line(cell.as_ref()))
            .collect();
        debug_assert!(row.len() <= self.columns.len(), "more cells than columns");
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text, header first, each line ending in a newline.
    pub(crate) fn render(&self, style: &Style) -> String {
        self.render_with(style, true)
    }

    /// The table as text, with or without its header (for tables printed
    /// page by page).
    pub(crate) fn render_with(&self, style: &Style, header: bool) -> String {
        let widths = self.widths(style.width);
        let shown: Vec<(usize, &Column, usize)> = self
            .columns
            .iter()
            .zip(&widths)
            .enumerate()
            .filter_map(|(index, (column, width))| width.map(|width| (index, column, width)))
            .collect();
        let mut out = String::new();
        if header {
            let cells: Vec<&str> = shown.iter().map(|(_, column, _)| column.header).collect();
            out.push_str(&style.bold(&line(&cells, &shown)));
            out.push('\n');
        }
        for row in &self.rows {
            let cells: Vec<&str> = shown
                .iter()
                .map(|(index, _, _)| row[*index].as_str())
                .collect();
            out.push_str(&line(&cells, &shown));
            out.push('\n');
        }
        out
    }

    /// Each column's width: its widest cell or header, within its bounds,
    /// with the flexible columns narrowed, and then optional ones left out
    /// (`None`), to fit `limit` if they can be.
    fn widths(&self, limit: Option<usize>) -> Vec<Option<usize>> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let widest = self
                    .rows
                    .iter()
                    .map(|row| row[index].width())
                    .chain([column.header.width(), column.min])
                    .max()
                    .unwrap_or(0);
                match column.max {
                    Some(max) => widest.min(max.max(column.header.width())),
                    None => widest,
                }
            })
            .collect();
        let Some(limit) = limit else {
            return widths.into_iter().map(Some).collect();
        };
        let natural = widths.clone();
        let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let mut excess = total.saturating_sub(limit);
        // What matters most is in the flexible columns (the arguments of a
        // call): they give up width down to a readable size, then optional
        // columns go, and only then do they narrow further.
        self.narrow(&mut widths, &mut excess, COMFORTABLE_FLEX_WIDTH);
        let mut shown: Vec<Option<usize>> = widths.iter().copied().map(Some).collect();
        for (index, column) in self.columns.iter().enumerate().rev() {
            if excess == 0 {
                break;
            }
            if column.optional
                && let Some(width) = shown[index].take()
            {
                excess = excess.saturating_sub(width + 2);
            }
        }
        self.narrow(&mut widths, &mut excess, MIN_FLEX_WIDTH);
        // Leaving a column out may have freed more than was needed: the
        // flexible columns take it back.
        let used: usize = widths
            .iter()
            .zip(&shown)
            .filter(|(_, shown)| shown.is_some())
            .map(|(width, _)| width + 2)
            .sum::<usize>()
            .saturating_sub(2);
        let mut slack = limit.saturating_sub(used);
        for (index, column) in self.columns.iter().enumerate() {
            if column.flex && slack > 0 {
                let take = natural[index].saturating_sub(widths[index]).min(slack);
                widths[index] += take;
                slack -= take;
            }
        }
        for (shown, width) in shown.iter_mut().zip(widths) {
            if let Some(shown) = shown {
                *shown = width;
            }
        }
        shown
    }

    /// Narrows the flexible columns, left to right, by up to `excess`, to
    /// no less than `floor` (or their header).
    fn narrow(&self, widths: &mut [usize], excess: &mut usize, floor: usize) {
        for (index, column) in self.columns.iter().enumerate() {
            if *excess == 0 {
                break;
            }
            if column.flex {
                let floor = floor.max(column.header.width());
                let give = widths[index].saturating_sub(floor).min(*excess);
                widths[index] -= give;
                *excess -= give;
            }
        }
    }
}

/// One line of a table: `cells` of the `shown` columns, padded to their
/// widths.
fn line(cells: &[&str], shown: &[(usize, &Column, usize)]) -> String {
    let mut line = String::new();
    for (position, (cell, (_, column, width))) in cells.iter().zip(shown).enumerate() {
        if position > 0 {
            line.push_str("  ");
        }
        let text = cut(cell, *width);
        let pad = width.saturating_sub(text.width());
        if column.right {
            line.extend(std::iter::repeat_n(' ', pad));
            line.push_str(&text);
        } else {
            line.push_str(&text);
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    // No trailing blanks after the last column.
    line.truncate(line.trim_end().len());
    line
}

/// `text` cut to `width` display columns, ending in `…` when it was cut.
pub(crate) fn cut(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// `text` safe to show on a terminal: control characters (escape
/// sequences above all) are shown as `\u{…}` escapes; line ends and tabs
/// are kept.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` on one line, for a table cell: line ends and tabs become
/// spaces, and other control characters escapes.
pub(crate) fn one_line(text: &str) -> String {
    clean(&text.replace("\r\n", "\n").replace('\r', "\n")).replace(['\n', '\t'], " ")
}

/// JSON on one line, as a table cell shows arguments.
pub(crate) fn compact_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| format!("<not JSON: {error}>"))
}

/// `text` with every line indented by `indent`.
pub(crate) fn indented(text: &str, indent: &str) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{indent}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// JSON, indented, as `--json` prints it.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    out(&text)
}

/// Writes `text` to standard output. A reader that went away (`| head`)
/// ends the program quietly, as it would end `cat`.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(0);
        }
        Err(error) => Err(anyhow::anyhow!("cannot write to standard output: {error}")),
    }
}

/// [`out`] with a newline.
pub(crate) fn outln(text: &str) -> anyhow::Result<()> {
    out(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn table() -> Table {
        let mut table = Table::new([
            column("ID"),
            column("ARGUMENTS").max(20).flex(),
            column("USES").right(),
            column("NOTE").optional(),
        ]);
        table.row(["a1", r#"{"recipient":"sally@gmail.com"}"#, "2", "plain"]);
        table.row(["b22", "{}", "10", "日本語のメモ"]);
        table.row(["c", "line\none\x1b[31m", "", ""]);
        table
    }

    #[test]
    fn columns_align_by_display_width_and_long_cells_are_cut() {
        expect![[r#"
            ID   ARGUMENTS             USES  NOTE
            a1   {"recipient":"sally…     2  plain
            b22  {}                      10  日本語のメモ
            c    line one\u{1b}[31m
        "#]]
        .assert_eq(&table().render(&Style::plain()));
    }

    #[test]
    fn headers_are_bold_only_with_colour_and_tables_fit_the_terminal() {
        let style = Style {
            terminal: true,
            color: true,
            width: Some(36),
        };
        expect![[r#"
            ␛[1mID   ARGUMENTS             USES␛[0m
            a1   {"recipient":"sally…     2
            b22  {}                      10
            c    line one\u{1b}[31m
        "#]]
        .assert_eq(&table().render(&style).replace('\x1b', "␛"));
        let rows_only = table().render_with(&Style::plain(), false);
        assert!(rows_only.starts_with("a1 "), "{rows_only}");
    }

    #[test]
    fn optional_columns_go_before_the_flexible_ones_get_narrow() {
        let mut table = Table::new([
            column("ID"),
            column("ARGUMENTS").flex(),
            column("RULE").optional(),
            column("RUN").optional(),
        ]);
        table.row([
            "a1",
            r#"{"recipient":"sally@gmail.com","message":"What's up homie"}"#,
            "default",
            "0193b1c2-0000-7000-8000-000000000001",
        ]);
        let fit = |width| {
            table.render(&Style {
                terminal: true,
                color: false,
                width: Some(width),
            })
        };
        // Wide enough: everything.
        assert_eq!(fit(200), table.render(&Style::plain()));
        expect![[r#"
            ID  ARGUMENTS                                                    RULE
            a1  {"recipient":"sally@gmail.com","message":"What's up homie"}  default
        "#]]
        .assert_eq(&fit(80));
        expect![[r#"
            ID  ARGUMENTS                                RULE
            a1  {"recipient":"sally@gmail.com","messag…  default
        "#]]
        .assert_eq(&fit(52));
        expect![[r#"
            ID  ARGUMENTS
            a1  {"recipient":"s…
        "#]]
        .assert_eq(&fit(10));
    }

    #[test]
    fn cutting_counts_wide_characters_and_keeps_short_text() {
        assert_eq!(cut("hello", 5), "hello");
        assert_eq!(cut("hello", 4), "hel…");
        assert_eq!(cut("日本語", 4), "日…");
        assert_eq!(cut("日本語", 5), "日本…");
        assert_eq!(cut("abc", 0), "");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\x1b]0;x\x07b\nc"), "a\\u{1b}]0;x\\u{7}b\nc");
        assert_eq!(one_line("a\r\nb\tc"), "a b c");
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        let now = 1_000_000_000;
        assert_eq!(age(now, now), "just now");
        assert_eq!(age(now - 42_000, now), "42s ago");
        assert_eq!(age(now - 5 * 60_000, now), "5m ago");
        assert_eq!(age(now - 3 * 3_600_000, now), "3h ago");
        assert_eq!(age(now - 2 * 86_400_000, now), "2d ago");
        assert_eq!(age(now + 30 * 60_000, now), "in 30m");
        assert_eq!(age(now + 1, now), "in 1s");
    }

    #[test]
    fn times_are_rfc3339_on_pipes() {
        let plain = Style::plain();
        assert_eq!(plain.time(1_795_379_400_123, 0), "2026-11-22T20:30:00Z");
        let terminal = Style {
            terminal: true,
            color: false,
            width: None,
        };
        assert_eq!(
            terminal.time_exact(1_795_379_400_000, 1_795_379_460_000),
            "2026-11-22T20:30:00Z (1m ago)"
        );
        assert_eq!(terminal.bold("x"), "x");
    }
}
