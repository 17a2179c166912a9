//! The OpenAPI document of the `/v1` API, served at `/v1/openapi.json`,
//! made from the handlers' own annotations so that it cannot drift from
//! them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    modifiers(&BearerToken),
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
