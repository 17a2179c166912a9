//! The OpenAPI document of the `/v1` API, served at `/v1/openapi.json`,
//! made from the handlers' own annotations so that it cannot drift from
//! them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{api, events, problem, tokens, wire};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "toolgate",
        description = "Ask people before an AI agent's tool calls run. Agents create an approval \
                       for each call and wait for its decision; approvers list, read and decide \
                       them. Every request carries a token: `Authorization: Bearer tg_…`.",
    ),
    paths(
        api::create_approval,
        api::list_approvals,
        api::get_approval,
        api::decide_approval,
        api::list_grants,
        api::revoke_grant,
        api::me,
        tokens::create_token,
        tokens::list_tokens,
        tokens::get_token,
        tokens::revoke_token,
        api::list_deliveries,
        api::redeliver,
        events::events,
    ),
    components(schemas(
        problem::ProblemDocument,
        events::SentEvent,
        wire::Status,
        wire::Approval,
        wire::ApprovalDetailBody,
        wire::ApprovalPage,
        wire::CreateApproval,
        wire::Hints,
        wire::DecisionKind,
        wire::DecisionBody,
        wire::DecisionRecord,
        wire::DecisionAnswer,
        wire::GrantBody,
        wire::GrantView,
        wire::GrantList,
        wire::Me,
        wire::CreateToken,
        wire::CreatedToken,
        wire::TokenState,
        wire::TokenView,
        wire::TokenList,
        wire::DeliveryState,
        wire::AttemptView,
        wire::DeliveryView,
        wire::DeliveryList,
        wire::Redelivery,
    )),
    modifiers(&BearerToken, &Problems),
    tags(
        (name = "approvals", description = "Tool calls waiting for people, and their decisions"),
        (name = "grants", description = "Standing approvals"),
        (name = "events", description = "The audit log as it grows"),
        (name = "tokens", description = "Who is calling, and the tokens admins make and revoke"),
        (name = "webhooks", description = "Events sent to webhooks, and how each delivery went"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A toolgate token (tg_…), made with `toolgate tokens create`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every refusal is a problem document (RFC 9457), sent as
/// `application/problem+json`, whatever the handlers' annotations say;
/// and a request with a body is refused with 415 when it does not say
/// it is JSON.
struct Problems;

const PROBLEM: &str = "#/components/schemas/Problem";

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let is_problem = |content: &Content| matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM);
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response.content = std::mem::take(&mut response.content)
                        .into_iter()
                        .map(|(kind, content)| {
                            if kind == "application/json" && is_problem(&content) {
                                ("application/problem+json".to_owned(), content)
                            } else {
                                (kind, content)
                            }
                        })
                        .collect();
                }
                if operation.request_body.is_some() {
                    operation
                        .responses
                        .responses
                        .entry("415".to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(
                                    "The body was sent without `Content-Type: application/json`",
                                )
                                .content(
                                    "application/problem+json",
                                    Content::new(Some(Ref::new(PROBLEM))),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}
