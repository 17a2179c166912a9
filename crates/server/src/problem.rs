//! Errors as HTTP responses: every failure becomes one
//! `application/problem+json` document (RFC 9457), made here and nowhere
//! else, with a `detail` that says what was wrong and what to do.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use toolgate_core::run::DecisionError;
use toolgate_core::store::StoreError;
use toolgate_core::{ArgumentProblem, ToolError};
use toolgate_engine::{DecideError, EngineError, RequestError};
use utoipa::ToSchema;

/// What went wrong with a request; it answers as a problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    detail: String,
    extra: Option<Box<Map<String, Value>>>,
}

/// A problem document (RFC 9457), as it is sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDocument {
    /// A URI naming the kind of problem (`urn:toolgate:problem:…`), the
    /// same for every problem of that kind.
    #[serde(rename = "type")]
    kind: String,
    /// A short summary of the kind of problem.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What was wrong with this request, and what to do.
    detail: String,
    /// Members particular to the kind of problem: `errors` (arguments
    /// that fail the schema), `approval` (the approval as it now stands).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    extra: Map<String, Value>,
}

impl Problem {
    /// A problem of kind `slug` with this status and detail.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            slug,
            detail: detail.into(),
            extra: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401: no token, or one that does not work.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403: the caller may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 409: the request lost a race, or does not fit what it acts on.
    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, slug, detail)
    }

    /// Adds a member.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Problem {
        if let Ok(value) = serde_json::to_value(value) {
            self.extra
                .get_or_insert_with(Default::default)
                .insert(key.to_owned(), value);
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What was wrong, and what to do.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// A member added with [`Problem::with`].
    pub(crate) fn member(&self, key: &str) -> Option<&Value> {
        self.extra.as_ref()?.get(key)
    }

    fn document(self) -> ProblemDocument {
        ProblemDocument {
            kind: format!("urn:toolgate:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            extra: self.extra.map(|extra| *extra).unwrap_or_default(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(self.document())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"toolgate\""),
            );
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        match error {
            StoreError::NotFound { what, id } => {
                Problem::not_found(format!("there is no {what} `{id}`"))
            }
            StoreError::Conflict { .. } => Problem::conflict("conflict", error.to_string()),
            other => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-failed",
                other.to_string(),
            ),
        }
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Problem {
        match error {
            EngineError::Store(error) => error.into(),
            EngineError::Contended { .. } => Problem::conflict("contended", error.to_string()),
            other => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine-failed",
                other.to_string(),
            ),
        }
    }
}

/// 422 with each argument that fails the schema.
fn invalid_arguments(error: ToolError) -> Problem {
    let problems: Vec<ArgumentProblem> = match &error {
        ToolError::InvalidArguments { problems, .. } => problems.clone(),
        _ => Vec::new(),
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-arguments",
        error.to_string(),
    )
    .with("errors", problems)
}

impl From<DecideError> for Problem {
    fn from(error: DecideError) -> Problem {
        match error {
            DecideError::NotFound { what, id } => {
                Problem::not_found(format!("there is no {what} `{id}`"))
            }
            DecideError::Forbidden { .. } => Problem::forbidden(error.to_string()),
            DecideError::Decision(ref decision) => {
                let slug = match decision {
                    DecisionError::AlreadyDecided { .. } => "already-decided",
                    DecisionError::FingerprintMismatch { .. } => "fingerprint-mismatch",
                    DecisionError::AlreadyApproved { .. } => "already-approved",
                    _ => "decision-refused",
                };
                Problem::conflict(slug, error.to_string())
            }
            DecideError::InvalidArguments(error) => invalid_arguments(error),
            DecideError::InvalidGrant(_) | DecideError::NotInDoubt { .. } => {
                Problem::bad_request(error.to_string())
            }
            DecideError::Engine(error) => error.into(),
            other => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "decision-failed",
                other.to_string(),
            ),
        }
    }
}

impl From<RequestError> for Problem {
    fn from(error: RequestError) -> Problem {
        match error {
            RequestError::Invalid(detail) => Problem::bad_request(detail),
            RequestError::InvalidArguments(error) => invalid_arguments(error),
            RequestError::NotExternal { .. } => {
                Problem::conflict("not-an-external-run", error.to_string())
            }
            RequestError::Forbidden { .. } => Problem::forbidden(error.to_string()),
            RequestError::Engine(error) => error.into(),
            other => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "request-failed",
                other.to_string(),
            ),
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Problem {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON, with `Content-Type: application/json`",
            ),
            other => Problem::bad_request(format!(
                "the body is not what this endpoint takes: {}; see /v1/openapi.json",
                other.body_text()
            )),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Problem {
        Problem::bad_request(format!(
            "the query string is not what this endpoint takes: {}",
            rejection.body_text()
        ))
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Problem {
        Problem::bad_request(format!("the path is not valid: {}", rejection.body_text()))
    }
}
