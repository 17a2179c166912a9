//! `[mcp]` in `toolgate.toml`: what the gateway calls its server, whom it
//! asks, and how long it waits.
//!
//! ```toml
//! [mcp]
//! name = "files"                            # tools are `files:TOOL` to policy
//! approve_via = ["client", "terminal"]      # whom to ask, in this order
//! timeout = "10m"                           # when a rule sets none
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Where a person may be asked to decide a held call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ApproveVia {
    /// The MCP client, through elicitation, when it declares that it can.
    Client,
    /// Nobody is prompted: the call waits in toolgate's store for the inbox,
    /// the HTTP API or `toolgate approvals`.
    Inbox,
    /// The controlling terminal (`/dev/tty`), when there is one.
    Terminal,
}

impl ApproveVia {
    /// The word used in `toolgate.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ApproveVia::Client => "client",
            ApproveVia::Inbox => "inbox",
            ApproveVia::Terminal => "terminal",
        }
    }

    /// Parses `client`, `inbox` or `terminal`.
    ///
    /// # Errors
    ///
    /// Any other word, with the ones that are known.
    pub fn parse(word: &str) -> Result<ApproveVia, ConfigError> {
        match word.trim() {
            "client" => Ok(ApproveVia::Client),
            "inbox" => Ok(ApproveVia::Inbox),
            "terminal" => Ok(ApproveVia::Terminal),
            other => Err(ConfigError(format!(
                "`{other}` is not a place to ask for approval; use client, inbox or terminal"
            ))),
        }
    }
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The server's name: its tools are `NAME:TOOL` to policy rules, grants
    /// and the inbox. `None` lets the command line derive one.
    pub name: Option<String>,
    /// Whom to ask about a held call, in order of preference: the first
    /// that can be reached is asked. The call is always in toolgate's
    /// store too, where the inbox, the API or `toolgate approvals` may
    /// decide it whoever is asked.
    pub approve_via: Vec<ApproveVia>,
    /// How long a held call waits for a decision when its policy rule sets
    /// no timeout; then it is rejected (it fails closed).
    pub timeout: Duration,
    /// How often a waiting call tells the client it still waits, when the
    /// client asked for progress.
    pub progress_every: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            name: None,
            approve_via: vec![ApproveVia::Client, ApproveVia::Terminal, ApproveVia::Inbox],
            timeout: Duration::from_secs(10 * 60),
            progress_every: Duration::from_secs(5),
        }
    }
}

/// A bad `[mcp]` section, or a bad value for one of its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    mcp: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    approve_via: Option<Vec<String>>,
    timeout: Option<String>,
}

impl GatewayConfig {
    /// Reads the `[mcp]` section of a `toolgate.toml` (`file` names it in
    /// messages); the defaults when there is none.
    ///
    /// # Errors
    ///
    /// The file is not TOML, or the section has an unknown key, a bad name,
    /// an unknown place to ask, or a bad duration; the message names the
    /// file and says what to write.
    pub fn from_toml_str(text: &str, file: &str) -> Result<GatewayConfig, ConfigError> {
        let parsed: File = toml::from_str(text)
            .map_err(|error| ConfigError(format!("{file}: invalid TOML: {}", error.message())))?;
        let mut config = GatewayConfig::default();
        let Some(section) = parsed.mcp else {
            return Ok(config);
        };
        let raw: Raw = section.try_into().map_err(|error: toml::de::Error| {
            ConfigError(format!(
                "{file}: [mcp]: {}; the section has name, approve_via and timeout",
                error.message().trim_end()
            ))
        })?;
        let fail = |why: String| ConfigError(format!("{file}: [mcp]: {why}"));
        if let Some(name) = raw.name {
            check_name(&name).map_err(|why| fail(format!("`name` {why}")))?;
            config.name = Some(name);
        }
        if let Some(words) = raw.approve_via {
            config.approve_via = parse_approve_via(words.iter().map(String::as_str))
                .map_err(|error| fail(format!("`approve_via`: {error}")))?;
        }
        if let Some(timeout) = raw.timeout {
            config.timeout =
                parse_timeout(&timeout).map_err(|error| fail(format!("`timeout`: {error}")))?;
        }
        Ok(config)
    }
}

/// Parses a list of places to ask, refusing an empty list and repeats.
///
/// # Errors
///
/// An unknown word, a repeated one, or no words at all.
pub fn parse_approve_via<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ApproveVia>, ConfigError> {
    let mut places = Vec::new();
    for word in words {
        let place = ApproveVia::parse(word)?;
        if places.contains(&place) {
            return Err(ConfigError(format!(
                "`{}` is named twice; name each place once",
                place.as_str()
            )));
        }
        places.push(place);
    }
    if places.is_empty() {
        return Err(ConfigError(
            "name at least one place to ask: client, inbox or terminal".to_owned(),
        ));
    }
    Ok(places)
}

/// Parses a timeout such as `90s` or `10m`.
///
/// # Errors
///
/// Not a duration, or zero.
pub fn parse_timeout(text: &str) -> Result<Duration, ConfigError> {
    let timeout = humantime::parse_duration(text.trim()).map_err(|error| {
        ConfigError(format!(
            "{text:?} is not a duration ({error}); write e.g. \"90s\" or \"10m\""
        ))
    })?;
    if timeout.is_zero() {
        return Err(ConfigError(
            "a timeout of zero would reject every held call at once; give e.g. \"10m\"".to_owned(),
        ));
    }
    Ok(timeout)
}

/// Checks a server name: what policy rules put before `:`.
///
/// # Errors
///
/// Says what is wrong: empty, too long, or a character other than letters,
/// digits, `_`, `-` and `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let fine = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a server name toolgate accepts: use 1 to 64 letters, digits and \
             `_ - .`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_section_gives_the_defaults() {
        let config = GatewayConfig::from_toml_str(
            "[[policy.rules]]\ntool = \"*\"\naction = \"ask\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config, GatewayConfig::default());
        assert_eq!(
            config.approve_via,
            [ApproveVia::Client, ApproveVia::Terminal, ApproveVia::Inbox]
        );
    }

    #[test]
    fn a_section_sets_name_places_and_timeout() {
        let config = GatewayConfig::from_toml_str(
            "[mcp]\nname = \"files\"\napprove_via = [\"inbox\"]\ntimeout = \"90s\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.name.as_deref(), Some("files"));
        assert_eq!(config.approve_via, [ApproveVia::Inbox]);
        assert_eq!(config.timeout, Duration::from_secs(90));
    }

    #[test]
    fn bad_sections_are_refused_with_what_to_write() {
        let cases = [
            (
                "[mcp]\nnmae = \"x\"\n",
                "t.toml: [mcp]: unknown field `nmae`, expected one of `name`, `approve_via`, `timeout`; the section has name, approve_via and timeout",
            ),
            (
                "[mcp]\nname = \"my files\"\n",
                "t.toml: [mcp]: `name` \"my files\" is not a server name toolgate accepts: use 1 to 64 letters, digits and `_ - .`",
            ),
            (
                "[mcp]\napprove_via = [\"slack\"]\n",
                "t.toml: [mcp]: `approve_via`: `slack` is not a place to ask for approval; use client, inbox or terminal",
            ),
            (
                "[mcp]\napprove_via = [\"inbox\", \"inbox\"]\n",
                "t.toml: [mcp]: `approve_via`: `inbox` is named twice; name each place once",
            ),
            (
                "[mcp]\napprove_via = []\n",
                "t.toml: [mcp]: `approve_via`: name at least one place to ask: client, inbox or terminal",
            ),
            (
                "[mcp]\ntimeout = \"soon\"\n",
                "t.toml: [mcp]: `timeout`: \"soon\" is not a duration (expected number at 0); write e.g. \"90s\" or \"10m\"",
            ),
            (
                "[mcp]\ntimeout = \"0s\"\n",
                "t.toml: [mcp]: `timeout`: a timeout of zero would reject every held call at once; give e.g. \"10m\"",
            ),
            (
                "[mcp\n",
                "t.toml: invalid TOML: unclosed table, expected `]`",
            ),
        ];
        for (text, expected) in cases {
            let error = GatewayConfig::from_toml_str(text, "t.toml").unwrap_err();
            assert_eq!(error.to_string(), expected, "for {text:?}");
        }
    }
}
