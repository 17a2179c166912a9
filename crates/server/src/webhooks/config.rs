//! `[[webhooks]]` in `toolgate.toml`: where to send events, with which
//! secret, and how hard to try. Every entry is checked when the server
//! starts, and a mistake is refused with the file and what to write.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// An event a webhook can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// An approval was created and waits for people.
    ApprovalRequested,
    /// An approval left `pending`: approved, edited, rejected, expired or
    /// cancelled (or was born settled by policy or a grant).
    ApprovalDecided,
    /// A run ended: completed, or failed.
    RunCompleted,
}

impl WebhookEvent {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [WebhookEvent; 3] = [
        WebhookEvent::ApprovalRequested,
        WebhookEvent::ApprovalDecided,
        WebhookEvent::RunCompleted,
    ];

    /// The event's `type`: `approval.requested`, `approval.decided` or
    /// `run.completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::ApprovalRequested => "approval.requested",
            WebhookEvent::ApprovalDecided => "approval.decided",
            WebhookEvent::RunCompleted => "run.completed",
        }
    }

    /// The event named `text`.
    pub fn parse(text: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One receiver of events.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Webhook {
    /// Where events are POSTed (`http://` or `https://`). Also the
    /// webhook's name in the delivery log.
    pub url: String,
    /// The key of the HMAC-SHA256 signature of every request.
    pub secret: String,
    /// The events it is sent.
    pub events: Vec<WebhookEvent>,
    /// How many attempts a delivery gets before it is given up.
    pub max_attempts: u32,
    /// The wait before the first retry; each later wait doubles, up to
    /// `max_backoff`, with jitter.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl fmt::Debug for Webhook {
    /// Never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"…")
            .field("events", &self.events)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Webhook {
    /// A webhook for every event, with the default retries: 8 attempts over
    /// about an hour (30 s, doubling, at most 30 minutes apart), 10 s each.
    ///
    /// # Errors
    ///
    /// The URL is not an `http://` or `https://` URL with a host, or the
    /// secret is empty.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Result<Webhook, WebhookError> {
        let url = url.into();
        let secret = secret.into();
        check_url(&url).map_err(|why| WebhookError(format!("webhook {url:?}: {why}")))?;
        if secret.is_empty() {
            return Err(WebhookError(format!(
                "webhook {url}: the secret is empty; give a long random one"
            )));
        }
        Ok(Webhook {
            url,
            secret,
            events: WebhookEvent::ALL.to_vec(),
            max_attempts: 8,
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30 * 60),
            timeout: Duration::from_secs(10),
        })
    }

    /// Only these events.
    pub fn events(mut self, events: impl IntoIterator<Item = WebhookEvent>) -> Webhook {
        self.events = events.into_iter().collect();
        self
    }

    /// At most `attempts` attempts (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Webhook {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The first wait between attempts, and the longest.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Webhook {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How long one attempt may take.
    pub fn timeout(mut self, timeout: Duration) -> Webhook {
        self.timeout = timeout;
        self
    }

    /// Whether it is sent `event`.
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }
}

/// A webhook configuration that cannot be used, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WebhookError(String);

/// One `[[webhooks]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    events: Option<Vec<String>>,
    max_attempts: Option<u32>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    timeout: Option<String>,
}

/// The parts of `toolgate.toml` this module reads; the rest is others'.
#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    webhooks: Option<toml::Value>,
}

/// Reads the `[[webhooks]]` of a `toolgate.toml` (`file` names it in
/// messages); `env` looks up the variables that `secret_env` names.
///
/// # Errors
///
/// The file is not TOML, or an entry has no or a bad URL, no secret (or
/// both `secret` and `secret_env`, or a `secret_env` that is not set), an
/// unknown event, an unknown field or a bad duration. The message names the
/// file and the entry, and says what to write.
pub fn load_webhooks(
    text: &str,
    file: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Webhook>, WebhookError> {
    let parsed: File = toml::from_str(text)
        .map_err(|error| WebhookError(format!("{file}: invalid TOML: {}", error.message())))?;
    let Some(value) = parsed.webhooks else {
        return Ok(Vec::new());
    };
    let toml::Value::Array(items) = value else {
        return Err(WebhookError(format!(
            "{file}: `webhooks` must be a list of tables; write each webhook as [[webhooks]] \
             with url = \"https://…\" and secret_env = \"NAME\""
        )));
    };
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let number = index + 1;
        let raw: RawWebhook = item.try_into().map_err(|error: toml::de::Error| {
            WebhookError(format!(
                "{file}: webhook {number}: {}; a webhook has url, secret or secret_env, events, \
                 max_attempts, backoff, max_backoff and timeout",
                error.message().trim_end()
            ))
        })?;
        let fail = |why: String| WebhookError(format!("{file}: webhook {number}: {why}"));
        let url = raw.url.ok_or_else(|| {
            fail("it has no `url`; write url = \"https://example.com/hooks/toolgate\"".to_owned())
        })?;
        let fail = |why: String| WebhookError(format!("{file}: webhook {number} ({url}): {why}"));
        check_url(&url).map_err(|why| {
            WebhookError(format!("{file}: webhook {number}: `url` {url:?} {why}"))
        })?;
        let secret = match (raw.secret, raw.secret_env) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "it has both `secret` and `secret_env`; keep one (secret_env = \"NAME\" keeps \
                     the secret out of the file)"
                        .to_owned(),
                ));
            }
            (None, None) => {
                return Err(fail(
                    "it has no secret; write secret_env = \"NAME\" and set the environment \
                     variable NAME to a long random string (or secret = \"…\")"
                        .to_owned(),
                ));
            }
            (Some(secret), None) => secret,
            (None, Some(name)) => env(&name).filter(|v| !v.is_empty()).ok_or_else(|| {
                fail(format!(
                    "secret_env names the environment variable {name}, which is not set (or \
                     empty); set it to the webhook's secret before starting the server"
                ))
            })?,
        };
        if secret.is_empty() {
            return Err(fail(
                "its secret is empty; give a long random one".to_owned(),
            ));
        }
        let mut webhook = Webhook::new(url.clone(), secret).map_err(|error| fail(error.0))?;
        if let Some(names) = raw.events {
            let mut events = Vec::new();
            for name in names {
                let event = WebhookEvent::parse(&name).ok_or_else(|| {
                    fail(format!(
                        "unknown event `{name}` in `events`; the events are approval.requested, \
                         approval.decided and run.completed (leave `events` out for all three)"
                    ))
                })?;
                if !events.contains(&event) {
                    events.push(event);
                }
            }
            if events.is_empty() {
                return Err(fail(
                    "`events` is empty; name some, or leave it out for all three".to_owned(),
                ));
            }
            webhook.events = events;
        }
        if let Some(attempts) = raw.max_attempts {
            if attempts == 0 {
                return Err(fail(
                    "`max_attempts` is 0; give at least 1 (the default is 8)".to_owned(),
                ));
            }
            webhook.max_attempts = attempts;
        }
        let duration = |field: &str, text: Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => humantime::parse_duration(&text).map_err(|error| {
                fail(format!(
                    "`{field}` = {text:?} is not a duration ({error}); write e.g. \"30s\" or \"5m\""
                ))
            }),
        };
        webhook.backoff = duration("backoff", raw.backoff, webhook.backoff)?;
        webhook.max_backoff =
            duration("max_backoff", raw.max_backoff, webhook.max_backoff)?.max(webhook.backoff);
        webhook.timeout = duration("timeout", raw.timeout, webhook.timeout)?;
        if webhook.timeout.is_zero() {
            return Err(fail("`timeout` is 0; give e.g. \"10s\"".to_owned()));
        }
        if webhooks.iter().any(|w| w.url == webhook.url) {
            return Err(fail(
                "another webhook has the same url; deliveries are kept by url, so give each \
                 receiver one entry"
                    .to_owned(),
            ));
        }
        webhooks.push(webhook);
    }
    Ok(webhooks)
}

/// Why `url` cannot be a webhook's URL.
fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|error| {
        format!("is not a URL ({error}); write e.g. url = \"https://example.com/hooks/toolgate\"")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "uses `{}:`; webhooks are sent over http:// or https://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host; write e.g. url = \"https://example.com/hooks/toolgate\"".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Webhook>, String> {
        load_webhooks(text, "toolgate.toml", |name| {
            (name == "HOOK_SECRET").then(|| "s3cret".to_owned())
        })
        .map_err(|error| error.to_string())
    }

    #[test]
    fn webhooks_are_read_with_their_defaults() {
        let hooks = load(
            r#"
            [[policy.rules]]
            tool = "*"
            action = "ask"

            [[webhooks]]
            url = "https://example.com/a"
            secret_env = "HOOK_SECRET"

            [[webhooks]]
            url = "http://127.0.0.1:9000/b"
            secret = "inline"
            events = ["approval.decided"]
            max_attempts = 3
            backoff = "100ms"
            timeout = "2s"
            "#,
        )
        .unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].secret, "s3cret");
        assert_eq!(hooks[0].events, WebhookEvent::ALL);
        assert_eq!(hooks[0].max_attempts, 8);
        assert_eq!(hooks[1].events, [WebhookEvent::ApprovalDecided]);
        assert_eq!(hooks[1].max_attempts, 3);
        assert_eq!(hooks[1].backoff, Duration::from_millis(100));
        assert_eq!(hooks[1].timeout, Duration::from_secs(2));
        assert!(
            !format!("{:?}", hooks[1]).contains("inline"),
            "Debug hides the secret"
        );
        assert_eq!(load("").unwrap(), vec![]);
    }

    #[test]
    fn mistakes_are_refused_saying_what_to_write() {
        let cases = [
            (
                "[[webhooks]]\nurl = \"ftp://example.com\"\nsecret = \"x\"",
                "toolgate.toml: webhook 1: `url` \"ftp://example.com\" uses `ftp:`",
            ),
            (
                "[[webhooks]]\nurl = \"not a url\"\nsecret = \"x\"",
                "is not a URL",
            ),
            ("[[webhooks]]\nsecret = \"x\"", "it has no `url`"),
            (
                "[[webhooks]]\nurl = \"https://example.com\"",
                "webhook 1 (https://example.com): it has no secret; write secret_env",
            ),
            (
                "[[webhooks]]\nurl = \"https://example.com\"\nsecret_env = \"NOPE\"",
                "the environment variable NOPE, which is not set",
            ),
            (
                "[[webhooks]]\nurl = \"https://example.com\"\nsecret = \"x\"\nsecret_env = \"HOOK_SECRET\"",
                "both `secret` and `secret_env`",
            ),
            (
                "[[webhooks]]\nurl = \"https://example.com\"\nsecret = \"x\"\nevents = [\"approval.created\"]",
                "unknown event `approval.created` in `events`; the events are approval.requested",
            ),
            (
                "[[webhooks]]\nurl = \"https://example.com\"\nsecret = \"x\"\nretries = 3",
                "webhook 1: unknown field `retries`",
            ),
            (
                "[[webhooks]]\nurl = \"https://example.com\"\nsecret = \"x\"\nbackoff = \"soon\"",
                "`backoff` = \"soon\" is not a duration",
            ),
            (
                "[webhooks]\nurl = \"https://example.com\"",
                "`webhooks` must be a list of tables",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(
                error.contains(expected),
                "{text:?}:\n{error}\nshould contain {expected:?}"
            );
        }
    }
}
