//! One attempt at a delivery: the signed request, what its answer means,
//! and when to try again.

use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use sha2::Sha256;
use toolgate_core::store::{Delivery, DeliveryAttempt, DeliveryNext};
use toolgate_core::time::after;

use super::Webhook;
use crate::state::AppState;

/// The delivery's id: the same on every attempt, so that receivers can
/// drop repeats.
pub const WEBHOOK_ID_HEADER: &str = "Toolgate-Webhook-Id";
/// When the attempt was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "Toolgate-Webhook-Timestamp";
/// `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}` with the secret.
pub const SIGNATURE_HEADER: &str = "Toolgate-Webhook-Signature";

/// The longest `Retry-After` honoured as asked; a longer one waits this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// How much of an error body the log keeps.
const ERROR_BODY_CHARS: usize = 200;

/// The value of the signature header for `body` sent at `timestamp`:
/// `v1=` and the hex HMAC-SHA256, keyed with `secret`, of
/// `"{timestamp}.{body}"`. Signing the time with the body lets a receiver
/// refuse an old request replayed.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1={}",
        toolgate_core::audit::hex(&mac.finalize().into_bytes())
    )
}

/// The HTTP client of one webhook: its time limit, and no redirects (a
/// receiver that moved says so with a 3xx, which is logged, rather than
/// the signed body going somewhere else).
pub(crate) fn client(hook: &Webhook) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(hook.timeout)
        .connect_timeout(hook.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Sends `delivery` once; what happened, and what happens next.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    hook: &Webhook,
    delivery: &Delivery,
    state: &AppState,
) -> (DeliveryAttempt, DeliveryNext) {
    let number = u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX - 1) + 1;
    let at = state.now();
    let timestamp = at.div_euclid(1000);
    let started = Instant::now();
    let result = client
        .post(&hook.url)
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("toolgate-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header(WEBHOOK_ID_HEADER, &delivery.id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature(&hook.secret, timestamp, &delivery.payload),
        )
        .body(delivery.payload.clone())
        .send()
        .await;
    let (status_code, error, verdict) = match result {
        Ok(response) => {
            let status = response.status();
            let retry_after = retry_after(response.headers(), SystemTime::now());
            if status.is_success() {
                // The body is not read: a receiver has nothing to say.
                (Some(status.as_u16()), None, Verdict::Delivered)
            } else {
                let body = response.text().await.unwrap_or_default();
                let error = describe(status, &body);
                let verdict = if retryable(status) {
                    Verdict::Retry(retry_after)
                } else {
                    Verdict::Refused
                };
                (Some(status.as_u16()), Some(error), verdict)
            }
        }
        Err(error) => (
            None,
            Some(network_error(&error, hook.timeout)),
            Verdict::Retry(None),
        ),
    };
    let attempt = DeliveryAttempt {
        attempt: number,
        at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        status_code,
        error,
    };
    let next = match verdict {
        Verdict::Delivered => DeliveryNext::Delivered,
        Verdict::Refused => DeliveryNext::Failed,
        Verdict::Retry(_) if number >= hook.max_attempts => DeliveryNext::Failed,
        Verdict::Retry(asked) => {
            let wait = asked
                .map(|asked| asked.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| backoff(hook, number, rand::random::<f64>()));
            DeliveryNext::RetryAt(after(state.now(), wait))
        }
    };
    (attempt, next)
}

enum Verdict {
    Delivered,
    /// Try again, after what the receiver asked for, if it did.
    Retry(Option<Duration>),
    /// The receiver refused it: trying again would not help.
    Refused,
}

/// Worth another try: the receiver is overloaded or broken for now.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error()
}

/// The wait after attempt `number`: `backoff` doubling with each attempt,
/// at most `max_backoff`, then jittered to between half and all of that
/// (`unit` in [0, 1)) so that many deliveries failing together do not
/// retry in step.
fn backoff(hook: &Webhook, number: u32, unit: f64) -> Duration {
    let doubled = hook
        .backoff
        .saturating_mul(2u32.saturating_pow(number.saturating_sub(1).min(30)));
    let wait = doubled.min(hook.max_backoff);
    wait.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn describe(status: StatusCode, body: &str) -> String {
    let body: String = body.trim().chars().take(ERROR_BODY_CHARS).collect();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// What went wrong on the way, with the causes reqwest keeps in its chain
/// (its own text says only "error sending request").
fn network_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text += &format!(": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // From RFC 4231's test case 2 construction, with our message.
        assert_eq!(
            signature("Jefe", 1_700_000_000, "{}"),
            format!("v1={}", {
                let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
                mac.update(b"1700000000.{}");
                toolgate_core::audit::hex(&mac.finalize().into_bytes())
            })
        );
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            toolgate_core::audit::hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let hook = Webhook::new("http://127.0.0.1:9/", "s")
            .unwrap()
            .backoff(Duration::from_secs(30), Duration::from_secs(1800));
        let full = |n| backoff(&hook, n, 0.999_999_999);
        assert_eq!(full(1).as_secs(), 29);
        assert_eq!(full(2).as_secs(), 59);
        assert_eq!(full(3).as_secs(), 119);
        assert_eq!(full(7).as_secs(), 1799, "capped");
        assert_eq!(full(40).as_secs(), 1799);
        assert_eq!(
            backoff(&hook, 1, 0.0),
            Duration::from_secs(15),
            "at least half"
        );
        // Eight attempts: seven waits, about an hour at most.
        let total: Duration = (1..8).map(full).sum();
        assert!((3_500..=3_700).contains(&total.as_secs()), "{total:?}");
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(
            retry_after(&headers("120"), now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(7))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&earlier), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 422, 301] {
            assert!(!retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
