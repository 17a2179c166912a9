//! The HTTP side that every provider shares: time limits, retries with
//! backoff, server-sent events, and reading a provider's error body.
//!
//! Both providers go through [`Http::send`], so a rate limit, an outage or a
//! dead server is handled the same way whichever model is in use.

use std::fmt;
use std::time::{Duration, SystemTime};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use toolgate_core::ModelError;

/// How a provider talks HTTP: time limits and retries.
///
/// The defaults follow the official OpenAI and Anthropic SDKs: a request
/// may take up to 10 minutes (long answers are slow), a failed one is
/// retried up to 3 times after a growing, randomised wait.
///
/// ```
/// use std::time::Duration;
/// use toolgate_models::HttpOptions;
///
/// let patient = HttpOptions::default()
///     .timeout(Duration::from_secs(1800))
///     .max_retries(5);
/// assert_ne!(patient, HttpOptions::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    connect_timeout: Duration,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            max_retries: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl HttpOptions {
    /// How long to wait for a connection to the server (default 10 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// How long one attempt may take from sending the request to the last
    /// byte of the answer, streamed or not (default 10 minutes). An attempt
    /// that runs out of time is not retried: the time was already spent.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// How many times a request is sent again after a rate limit (429), a
    /// server error (5xx) or a failed connection (default 3). `0` turns
    /// retries off.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The wait before the first retry; each later one may wait up to twice
    /// as long, capped by `max`, and the actual wait is a random fraction
    /// of that ("full jitter", so that many clients do not retry in step).
    /// Defaults: 500 ms, capped at 8 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// The longest `Retry-After` a provider may ask for and still be waited
    /// for (default 60 s); a longer one fails at once, since waiting that
    /// long is rarely what a person at a terminal wants.
    pub fn max_retry_after(mut self, limit: Duration) -> Self {
        self.max_retry_after = limit;
        self
    }

    /// The wait before retry number `retry` (0 for the first), given a
    /// random `fraction` in `[0, 1]`.
    fn backoff_for(&self, retry: u32, fraction: f64) -> Duration {
        let doubled = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(retry.min(31)));
        doubled
            .min(self.backoff_max)
            .mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// `base` joined with `path`, after checking that `base` is an http(s) URL.
pub(crate) fn endpoint(provider: &str, base: &str, path: &str) -> Result<String, ModelError> {
    let base = base.trim().trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(format!("{base}/{path}")),
        Ok(url) => Err(ModelError::Config {
            message: format!(
                "the base URL `{base}` of {provider} uses `{}:`; use an http:// or https:// URL",
                url.scheme()
            ),
        }),
        Err(error) => Err(ModelError::Config {
            message: format!(
                "the base URL `{base}` of {provider} is not a URL ({error}); write it in full, e.g. http://localhost:11434/v1"
            ),
        }),
    }
}

/// An HTTP client for one provider.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    options: HttpOptions,
    provider: String,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("provider", &self.provider)
            .field("options", &self.options)
            .finish()
    }
}

impl Http {
    pub(crate) fn new(provider: &str, options: HttpOptions) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(concat!("toolgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ModelError::Config {
                message: format!("cannot set up an HTTP client for {provider}: {error}"),
            })?;
        Ok(Http {
            client,
            options,
            provider: provider.to_owned(),
        })
    }

    pub(crate) fn provider(&self) -> &str {
        &self.provider
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request that `build` makes, again after a retryable
    /// failure, and returns the first successful response. Its body is not
    /// read yet: streaming callers read it as it comes.
    pub(crate) async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ModelError> {
        let mut retry = 0;
        loop {
            let (error, wait) = match build().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    // The body of an error is small; a broken one still
                    // leaves the status to report.
                    let body = response.text().await.unwrap_or_default();
                    let error = ModelError::Api {
                        provider: self.provider.clone(),
                        status: status.as_u16(),
                        message: error_message(status, &body),
                    };
                    if !should_retry(status, &headers) {
                        return Err(error);
                    }
                    let wait = match retry_after(&headers, SystemTime::now()) {
                        Some(wait) if wait > self.options.max_retry_after => return Err(error),
                        Some(wait) => wait,
                        None => self.options.backoff_for(retry, rand::random::<f64>()),
                    };
                    (error, wait)
                }
                Err(error) => {
                    // A connection that failed or broke is worth another
                    // try; an attempt that used up its whole time limit is
                    // not, or the wait would multiply.
                    let retryable = if error.is_timeout() {
                        error.is_connect()
                    } else {
                        error.is_connect() || error.is_request()
                    };
                    let error = self.transport_error(error);
                    if !retryable {
                        return Err(error);
                    }
                    (
                        error,
                        self.options.backoff_for(retry, rand::random::<f64>()),
                    )
                }
            };
            if retry >= self.options.max_retries {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// A failure to send, or to read an answer.
    pub(crate) fn transport_error(&self, error: reqwest::Error) -> ModelError {
        if error.is_timeout() {
            ModelError::Timeout {
                provider: self.provider.clone(),
                after: if error.is_connect() {
                    self.options.connect_timeout
                } else {
                    self.options.timeout
                },
            }
        } else {
            ModelError::Transport {
                provider: self.provider.clone(),
                source: Box::new(error),
            }
        }
    }

    pub(crate) fn invalid(&self, message: impl Into<String>) -> ModelError {
        ModelError::InvalidResponse {
            provider: self.provider.clone(),
            message: message.into(),
        }
    }

    /// Reads a whole JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, ModelError> {
        let body = response
            .text()
            .await
            .map_err(|error| self.transport_error(error))?;
        serde_json::from_str(&body).map_err(|error| {
            self.invalid(format!("{error}; the answer began with {}", snippet(&body)))
        })
    }

    /// The server-sent events of a streamed answer.
    pub(crate) fn events(
        &self,
        response: Response,
    ) -> impl Stream<Item = Result<Event, ModelError>> + Send + use<> {
        let http = self.clone();
        response.bytes_stream().eventsource().map(move |event| {
            event.map_err(|error| match error {
                EventStreamError::Transport(error) => http.transport_error(error),
                EventStreamError::Utf8(error) => {
                    http.invalid(format!("the event stream is not UTF-8: {error}"))
                }
                EventStreamError::Parser(error) => {
                    http.invalid(format!("the event stream is malformed: {error}"))
                }
            })
        })
    }
}

/// Whether a failed status is worth another try: rate limits, time-outs
/// and server errors are passing; the rest would fail the same way again.
/// The providers' `x-should-retry` header overrides this, as their SDKs do.
fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers
        .get("x-should-retry")
        .and_then(|value| value.to_str().ok())
    {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// How long the server asked to wait: `retry-after-ms` (OpenAI's), or
/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = header("retry-after-ms").and_then(seconds) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Some(secs) = seconds(value) {
        return Some(Duration::from_secs_f64(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The provider's own words from an error body.
///
/// OpenAI, Anthropic and most compatible servers send
/// `{"error": {"message": …}}`; some send `{"error": "…"}` or
/// `{"message": …}`. Anything else (a proxy's HTML page, say) is shown as
/// it is, shortened.
pub(crate) fn error_message(status: StatusCode, body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        let candidates = [
            value.pointer("/error/message"),
            value.get("error"),
            value.get("message"),
            value.get("detail"),
        ];
        if let Some(message) = candidates
            .into_iter()
            .flatten()
            .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()))
        {
            return message.to_owned();
        }
    }
    if body.trim().is_empty() {
        match status.canonical_reason() {
            Some(reason) => format!("{reason} (the answer had no body)"),
            None => "the answer had no body".to_owned(),
        }
    } else {
        snippet(body)
    }
}

/// Reads `null` as the default value: compatible servers send `null` where
/// OpenAI leaves a field out.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The start of a text, for error messages.
pub(crate) fn snippet(text: &str) -> String {
    const LIMIT: usize = 300;
    let text = text.trim();
    if text.is_empty() {
        return "nothing (it was empty)".to_owned();
    }
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(at(&[("retry-after", "1")]), Some(Duration::from_secs(1)));
        assert_eq!(
            at(&[("retry-after", " 2.5 ")]),
            Some(Duration::from_millis(2500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(at(&[("retry-after", &later)]), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(at(&[("retry-after", &earlier)]), Some(Duration::ZERO));
        assert_eq!(
            at(&[("retry-after-ms", "250"), ("retry-after", "9")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(at(&[("retry-after", "soon")]), None);
        assert_eq!(at(&[("retry-after", "-1")]), None);
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let options =
            HttpOptions::default().backoff(Duration::from_millis(100), Duration::from_millis(700));
        let full: Vec<u128> = (0..5)
            .map(|retry| options.backoff_for(retry, 1.0).as_millis())
            .collect();
        assert_eq!(full, [100, 200, 400, 700, 700]);
        assert_eq!(options.backoff_for(2, 0.0), Duration::ZERO);
        assert_eq!(options.backoff_for(2, 0.5), Duration::from_millis(200));
        assert_eq!(
            options.backoff_for(u32::MAX, 1.0),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn retryable_statuses_and_the_should_retry_header() {
        let none = HeaderMap::new();
        for status in [408, 409, 429, 500, 502, 503, 529] {
            assert!(
                should_retry(StatusCode::from_u16(status).unwrap(), &none),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                !should_retry(StatusCode::from_u16(status).unwrap(), &none),
                "{status}"
            );
        }
        let no = headers(&[("x-should-retry", "false")]);
        assert!(!should_retry(StatusCode::TOO_MANY_REQUESTS, &no));
        let yes = headers(&[("x-should-retry", "true")]);
        assert!(should_retry(StatusCode::BAD_REQUEST, &yes));
    }

    #[test]
    fn error_messages_are_the_providers_own() {
        let status = StatusCode::UNAUTHORIZED;
        let cases = [
            (
                r#"{"error": {"message": "Incorrect API key provided: sk-dummy.", "type": "invalid_request_error"}}"#,
                "Incorrect API key provided: sk-dummy.",
            ),
            (
                r#"{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}"#,
                "invalid x-api-key",
            ),
            (
                r#"{"error": "model 'llama9' not found"}"#,
                "model 'llama9' not found",
            ),
            (
                r#"{"object": "error", "message": "bad model"}"#,
                "bad model",
            ),
            ("<html>Bad Gateway</html>", "\"<html>Bad Gateway</html>\""),
            ("", "Unauthorized (the answer had no body)"),
        ];
        for (body, message) in cases {
            assert_eq!(error_message(status, body), message, "for {body}");
        }
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(status, &long),
            format!("{:?}…", "x".repeat(300))
        );
    }
}
