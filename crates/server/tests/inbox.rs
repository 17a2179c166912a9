//! The web inbox's routes over HTTP against a real server and store:
//! signing in and out, cookies and security headers, CSRF, who sees
//! what, deciding through the forms, and hostile text kept inert.

mod common;

use common::web::{Page, Web, unescape};
use common::{TestServer, now, send_email};
use reqwest::StatusCode;
use serde_json::{Value, json};
use toolgate_core::{Principal, Role};
use toolgate_server::issue_token;

const POLICY: &str = r#"
[[policy.rules]]
name = "outside mail"
tool = "send_email"
action = "ask"

[[policy.rules]]
name = "ops only"
tool = "deploy"
action = "ask"
approvers = ["group:ops"]
quorum = 2
"#;

async fn server() -> TestServer {
    TestServer::start(POLICY).await
}

fn deploy() -> Value {
    json!({
        "tool": "deploy",
        "args": {"service": "api", "version": "1.2.3"},
        "schema": {
            "type": "object",
            "properties": {"service": {"type": "string"}, "version": {"type": "string"}},
            "required": ["service", "version"]
        }
    })
}

async fn status_of(server: &TestServer, token: &str, id: &str) -> Value {
    let (status, approval) = server.get(&format!("/v1/approvals/{id}"), token).await;
    assert_eq!(status, StatusCode::OK, "{approval}");
    approval
}

#[tokio::test]
async fn signing_in_sets_a_strict_http_only_session_cookie() {
    let server = server().await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut web = Web::new(&server);

    let page = web.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/inbox/login");
    let page = web.get("/inbox").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/inbox/login");
    let form = web.get("/inbox/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.has(r#"<form class="login" method="post" action="/inbox/login">"#));
    assert!(form.has(r#"type="password" name="token""#));

    let signed_in = web.sign_in(&alice).await;
    assert_eq!(signed_in.location(), "/inbox");
    assert_eq!(
        signed_in.set_cookies(),
        [format!(
            "toolgate_session={alice}; HttpOnly; SameSite=Strict; Path=/"
        )]
    );
    let page = web.get("/").await;
    assert_eq!(page.location(), "/inbox");
    let inbox = web.get("/inbox").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.has("alice · approver"), "{}", inbox.body);
    assert!(inbox.has("Nothing is waiting for a decision"));
    // Signed in already: the form sends people on.
    assert_eq!(web.get("/inbox/login").await.location(), "/inbox");

    for page in [&form, &inbox] {
        let headers = &page.headers;
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    }
    for (path, kind) in [
        ("/inbox/assets/inbox.css", "text/css; charset=utf-8"),
        ("/inbox/assets/inbox.js", "text/javascript; charset=utf-8"),
    ] {
        let asset = Web::new(&server).get(path).await;
        assert_eq!(asset.status, StatusCode::OK);
        assert_eq!(asset.headers["content-type"], kind);
        assert_eq!(asset.headers["x-content-type-options"], "nosniff");
        assert!(asset.body.len() > 1000);
    }
    server.stop().await;
}

#[tokio::test]
async fn behind_https_the_cookie_is_secure() {
    let server = TestServer::start_configured(POLICY, |config| config.secure_cookies = true).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut web = Web::new(&server);
    let page = web.sign_in(&alice).await;
    assert_eq!(
        page.set_cookies(),
        [format!(
            "toolgate_session={alice}; HttpOnly; SameSite=Strict; Path=/; Secure"
        )]
    );
    let inbox = web.get("/inbox").await;
    let out = web.post("/inbox/logout", &[("csrf", &inbox.csrf())]).await;
    assert_eq!(
        out.set_cookies(),
        ["toolgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"]
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_revoked_and_expired_tokens_get_the_form_again_and_no_cookie() {
    let server = server().await;
    let web = Web::new(&server);
    let revoked = server.token("gone", Role::Approver, &[]).await;
    let id = server
        .store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.principal.name == "gone")
        .unwrap()
        .id;
    server
        .store
        .revoke_token(&id, "admin", now())
        .await
        .unwrap();
    let expired = issue_token(
        Principal::new("late", Role::Approver),
        "test",
        Some(now() - 1000),
        now() - 10_000,
    )
    .unwrap();
    server.store.create_token(&expired.record).await.unwrap();

    let unknown = format!("tg_{}", "0".repeat(64));
    let cases = [
        (unknown.as_str(), "That token is not valid."),
        ("not a token at all", "That token is not valid."),
        ("", "That token is not valid."),
        (revoked.as_str(), "That token has been revoked."),
        (expired.secret.as_str(), "That token has expired."),
    ];
    let mut unknown_pages = Vec::new();
    for (token, message) in cases {
        let page = web
            .post("/inbox/login", &[("token", token), ("next", "/inbox")])
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(page.set_cookies().is_empty(), "{token}");
        assert!(page.has(message), "{token}: {}", page.body);
        assert!(page.has(r#"role="alert""#));
        assert!(page.has(r#"name="token""#), "the form again");
        // Nothing about the token itself: not its id, not its owner.
        assert!(!page.has(&id) && !page.has("gone") && !page.has("late"));
        if message.contains("not valid") {
            // The same page but for the clock it carries.
            let start = page.body.find("data-now=\"").unwrap();
            let end = start + page.body[start..].find('>').unwrap();
            unknown_pages.push(format!("{}{}", &page.body[..start], &page.body[end..]));
        }
    }
    // A made-up token and a wrong guess read the same.
    assert!(unknown_pages.windows(2).all(|w| w[0] == w[1]));
    server.stop().await;
}

#[tokio::test]
async fn a_session_ends_when_its_token_is_revoked() {
    let server = TestServer::start_configured(POLICY, |config| {
        config.token_cache = std::time::Duration::ZERO;
    })
    .await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    assert_eq!(web.get("/inbox").await.status, StatusCode::OK);
    let id = server.store.tokens().await.unwrap()[0].id.clone();
    server
        .store
        .revoke_token(&id, "admin", now())
        .await
        .unwrap();

    let page = web.get("/inbox/grants").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/inbox/login?next=/inbox/grants&ended=1");
    assert_eq!(
        page.set_cookies(),
        ["toolgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"]
    );
    let form = web.get(page.location()).await;
    assert!(form.has("Your session has ended"));
    assert_eq!(web.get("/").await.location(), "/inbox/login");
    server.stop().await;
}

#[tokio::test]
async fn signing_in_returns_to_the_page_asked_for_and_only_inside_the_inbox() {
    let server = server().await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let web = Web::new(&server);
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let location = page.location().to_owned();
    assert_eq!(location, format!("/inbox/login?next=/inbox/approvals/{id}"));
    let form = web.get(&location).await;
    let next = form.field("next");
    assert_eq!(next, format!("/inbox/approvals/{id}"));
    let page = web
        .post("/inbox/login", &[("token", &alice), ("next", &next)])
        .await;
    assert_eq!(page.location(), next);

    for evil in ["https://evil.example/", "//evil.example", "/inbox/../v1/me"] {
        let page = web
            .post("/inbox/login", &[("token", &alice), ("next", evil)])
            .await;
        assert_eq!(page.location(), "/inbox", "{evil}");
        let form = web
            .get(&format!("/inbox/login?next={}", evil.replace('/', "%2F")))
            .await;
        assert_eq!(form.field("next"), "/inbox", "{evil}");
    }
    server.stop().await;
}

#[tokio::test]
async fn agents_tokens_do_not_open_the_inbox() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut web = Web::new(&server);
    let page = web
        .post("/inbox/login", &[("token", &bot), ("next", "/inbox")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookies().is_empty());
    assert!(page.has("That is an agent&#39;s token") || page.has("That is an agent's token"));

    // A cookie made by hand gets the same answer on every page.
    web.cookie = Some(format!("toolgate_session={bot}"));
    for path in [
        "/inbox".to_owned(),
        "/inbox/list".to_owned(),
        "/inbox/grants".to_owned(),
        format!("/inbox/approvals/{id}"),
    ] {
        let page = web.get(&path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.has("is an agent"), "{path}: {}", page.body);
        assert!(!page.has("sally@gmail.com"), "{path}");
        assert!(!page.has("/decision"), "{path}");
    }
    let page = web
        .post(
            &format!("/inbox/approvals/{id}/decision"),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let approval = status_of(&server, &bot, &id).await;
    assert_eq!(approval["status"], "pending");
    server.stop().await;
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_change_nothing() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let carol = server.token("carol", Role::Approver, &[]).await;
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    let csrf = page.csrf();
    let fingerprint = page.field("fingerprint");
    assert_eq!(csrf.len(), 64);
    // Another session's token is not this one's.
    let mut other = Web::new(&server);
    other.sign_in(&carol).await;
    let carols = other.get("/inbox").await.csrf();
    assert_ne!(carols, csrf);

    let decision = format!("/inbox/approvals/{id}/decision");
    for bad in ["", "0", carols.as_str(), &csrf[..63]] {
        let page = web
            .post(
                &decision,
                &[
                    ("csrf", bad),
                    ("fingerprint", &fingerprint),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{bad:?}");
        assert!(page.has("security token"), "{}", page.body);
    }
    let page = web
        .post(
            &decision,
            &[("fingerprint", &fingerprint), ("decision", "approve")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Sent from another site, the right token does not help either.
    let page = web
        .post_with(
            &decision,
            &[
                ("csrf", &csrf),
                ("fingerprint", &fingerprint),
                ("decision", "approve"),
            ],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&server, &alice, &id).await["status"], "pending");

    // Nor does the API take the cookie without the header.
    let response = server
        .client
        .post(server.url(&decision.replace("/inbox/", "/v1/")))
        .header("cookie", web.cookie.clone().unwrap())
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let page = web.post("/inbox/logout", &[("csrf", "nope")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.set_cookies().is_empty());
    assert_eq!(
        web.get("/inbox").await.status,
        StatusCode::OK,
        "still signed in"
    );

    // With it, the decision counts.
    let page = web
        .post(
            &decision,
            &[
                ("csrf", &csrf),
                ("fingerprint", &fingerprint),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), format!("/inbox/approvals/{id}"));
    let approval = status_of(&server, &alice, &id).await;
    assert_eq!(approval["status"], "approved");
    assert_eq!(approval["decided_by"], "alice");

    let page = web.post("/inbox/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/inbox/login");
    assert_eq!(
        page.set_cookies(),
        ["toolgate_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_list_shows_who_asked_and_pages_and_filters() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        let approval = server
            .ask(&bot, send_email(&format!("user{n}@gmail.com")))
            .await;
        ids.push(approval["id"].as_str().unwrap().to_owned());
    }
    let rejected = &ids[3];
    server
        .post(
            &format!("/v1/approvals/{rejected}/decision"),
            &alice,
            json!({"decision": "reject", "message": "no"}),
        )
        .await;
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;

    let first = web.get("/inbox").await;
    assert_eq!(first.status, StatusCode::OK);
    let shown = first.body.matches(r#"<li class="item""#).count();
    assert_eq!(shown, 25);
    // Newest first, with what an approver needs to triage.
    let newest = first.body.find("user29@gmail.com").unwrap();
    let older = first.body.find("user28@gmail.com").unwrap();
    assert!(newest < older);
    assert!(
        first.has(
            r#"recipient: &quot;user29@gmail.com&quot;, message: &quot;What&#39;s up homie&quot;"#
        ) || first.has(
            r#"recipient: &quot;user29@gmail.com&quot;, message: &quot;What's up homie&quot;"#
        ),
        "{}",
        first.body
    );
    assert!(first.has("asked by <b><bdi>bot</bdi></b>"));
    assert!(first.has("rule <b><bdi>outside mail</bdi></b>"));
    assert!(first.has("0 of 1 approval"));
    assert!(first.has(">just now</time>"));
    assert!(!first.has("user3@gmail.com"), "rejected: not pending");
    assert!(first.has(r#"id="approvals" data-src="/inbox/list?status=pending""#));

    let older_link = {
        let marker = r#"<a rel="next" href=""#;
        let start = first.body.find(marker).unwrap() + marker.len();
        unescape(&first.body[start..start + first.body[start..].find('"').unwrap()])
    };
    let second = web.get(&older_link).await;
    assert_eq!(second.body.matches(r#"<li class="item""#).count(), 4);
    assert!(second.has("user0@gmail.com"));
    assert!(second.has("← Newest"));
    assert!(!second.has(r#"rel="next""#));

    let rejected_page = web.get("/inbox?status=rejected").await;
    assert_eq!(rejected_page.body.matches(r#"<li class="item""#).count(), 1);
    assert!(rejected_page.has("user3@gmail.com"));
    assert!(rejected_page.has("rejected by <b><bdi>alice</bdi></b>"));
    assert!(rejected_page.has(r#"<a href="/inbox?status=rejected" aria-current="page">"#));
    let all = web.get("/inbox?status=all").await;
    assert_eq!(all.body.matches(r#"<li class="item""#).count(), 25);

    // The fragment the page swaps in: the list alone.
    let fragment = web.get("/inbox/list?status=pending").await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert_eq!(fragment.body.matches(r#"<li class="item""#).count(), 25);
    assert!(!fragment.has("<html") && !fragment.has("Sign out"));

    let bad = web.get("/inbox?status=maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("is not a status"));
    server.stop().await;
}

#[tokio::test]
async fn an_approvals_page_shows_the_call_the_rule_the_context_and_the_history() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &["ops"]).await;
    let bob = server.token("bob", Role::Approver, &["sales"]).await;
    let mut body = deploy();
    body["context"] = json!({"ticket": "OPS-7", "why": "the release is due"});
    body["description"] = json!("Deploys a service.");
    let id = server.ask(&bot, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;

    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        "<h1><span class=\"tool\">deploy</span></h1>",
        "Deploys a service.",
        "{\n  &quot;service&quot;: &quot;api&quot;,\n  &quot;version&quot;: &quot;1.2.3&quot;\n}",
        "<dd><bdi>ops only</bdi></dd>",
        "<code>group:ops</code>, or an admin",
        "2 distinct approvers; 1 so far (alice)",
        "Waiting for 1 more approval (1 of 2)",
        "&quot;ticket&quot;: &quot;OPS-7&quot;",
        "asked for by <b><bdi>bot</bdi></b>",
        "<b><bdi>alice</bdi></b> approved",
        "You approved this already",
    ] {
        assert!(page.has(text), "{text} in {}", page.body);
    }

    // Bob is not in ops: he reads it all, and has nothing to press.
    let mut bobs = Web::new(&server);
    bobs.sign_in(&bob).await;
    let page = bobs.get(&format!("/inbox/approvals/{id}")).await;
    assert!(page.has("You (bob) may not decide this one: the rule names group:ops, or an admin."));
    assert!(!page.has("<form id=\"approve-form\""));
    let csrf = page.csrf();
    let fingerprint = status_of(&server, &alice, &id).await["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = bobs
        .post(
            &format!("/inbox/approvals/{id}/decision"),
            &[
                ("csrf", &csrf),
                ("fingerprint", &fingerprint),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.has("Your decision was not recorded"));
    assert_eq!(status_of(&server, &alice, &id).await["status"], "pending");

    let missing = web.get("/inbox/approvals/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.has("there is no approval `nope`"));
    server.stop().await;
}

fn decision_fields<'a>(page: &'a Page, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut fields = vec![
        ("csrf", page.csrf()),
        ("fingerprint", page.field("fingerprint")),
    ];
    fields.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    fields
}

async fn post_fields(web: &Web<'_>, path: &str, fields: &[(&str, String)]) -> Page {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    web.post(path, &fields).await
}

#[tokio::test]
async fn edits_are_checked_and_decisions_say_what_happened() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/inbox/approvals/{id}");
    let decision = format!("{path}/decision");
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    let page = web.get(&path).await;
    assert!(page.has(r#"<textarea id="args" name="args""#));
    assert!(page.has(r#"data-schema="{&quot;type&quot;:&quot;object&quot;"#));

    // Not JSON.
    let bad = post_fields(
        &web,
        &decision,
        &decision_fields(&page, &[("decision", "edit"), ("args", "{\"recipient\": ")]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("The arguments are not valid JSON"));
    assert!(
        bad.has("<details id=\"edit\" open>"),
        "the edit box stays open"
    );
    assert!(
        bad.has("{&quot;recipient&quot;: </textarea>"),
        "what was typed is kept"
    );

    // JSON that fails the schema: the server's errors, each by argument.
    let typed = r#"{"recipient": 42, "message": "hi", "cc": "x"}"#;
    let bad = post_fields(
        &web,
        &decision,
        &decision_fields(&page, &[("decision", "edit"), ("args", typed)]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(
        bad.has("The edited arguments do not fit the tool&#39;s schema")
            || bad.has("The edited arguments do not fit the tool's schema")
    );
    assert!(bad.has("<li><code>recipient</code>: "), "{}", bad.body);
    assert!(bad.has(&maud_escape(typed)));
    // Approve with changed text is not an approval of the old text.
    let changed = post_fields(
        &web,
        &decision,
        &decision_fields(
            &page,
            &[
                ("decision", "approve"),
                ("args", r#"{"recipient": "x@example.com", "message": "hi"}"#),
            ],
        ),
    )
    .await;
    assert_eq!(changed.status, StatusCode::BAD_REQUEST);
    assert!(changed.has("you changed the arguments"));
    assert_eq!(status_of(&server, &alice, &id).await["status"], "pending");

    let edited = r#"{"recipient": "sally@example.com", "message": "Hello Sally"}"#;
    let done = post_fields(
        &web,
        &decision,
        &decision_fields(&page, &[("decision", "edit"), ("args", edited)]),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let flash = done
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("toolgate_flash="))
        .unwrap();
    assert_eq!(
        flash,
        "toolgate_flash=edited; HttpOnly; SameSite=Strict; Path=/inbox; Max-Age=60"
    );
    let approval = status_of(&server, &bot, &id).await;
    assert_eq!(approval["status"], "edited");
    assert_eq!(
        approval["args"],
        json!({"recipient": "sally@example.com", "message": "Hello Sally"})
    );
    assert_eq!(approval["edited_by"], "alice");

    let session = web.cookie.clone().unwrap();
    web.cookie = Some(format!("{session}; toolgate_flash=edited"));
    let shown = web.get(&path).await;
    assert!(shown.has("Approved with your arguments"));
    assert!(shown.has("Approved with edited arguments by <b><bdi>alice</bdi></b>"));
    assert!(shown.has("The arguments as the agent proposed them"));
    assert!(shown.has("edited the arguments (and approved them)"));
    assert!(!shown.has("<form id=\"approve-form\""), "decided: no forms");
    assert!(shown.set_cookies().contains(
        &"toolgate_flash=; HttpOnly; SameSite=Strict; Path=/inbox; Max-Age=0".to_owned()
    ));
    // A flash cookie only ever names one of the known outcomes.
    web.cookie = Some(format!("{session}; toolgate_flash=%3Cscript%3E"));
    let shown = web.get(&path).await;
    assert!(!shown.has("notice success"));
    server.stop().await;
}

fn maud_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn rejections_carry_the_message_and_lost_races_show_what_won() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &["ops"]).await;
    let bob = server.token("bob", Role::Approver, &["ops"]).await;
    let mut web = Web::new(&server);
    web.sign_in(&bob).await;

    // Rejected, with a message for the agent.
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    let done = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(
            &page,
            &[
                ("decision", "reject"),
                ("message", "Not to personal addresses."),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let approval = status_of(&server, &bot, &id).await;
    assert_eq!(approval["status"], "rejected");
    assert_eq!(
        approval["decisions"][0]["message"],
        "Not to personal addresses."
    );
    let shown = web.get(&format!("/inbox/approvals/{id}")).await;
    assert!(shown.has("Rejected by <b><bdi>bob</bdi></b>"));
    assert!(shown.has("Not to personal addresses."));

    // Someone else decided while the page was open.
    let id = server.ask(&bot, send_email("tom@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    let lost = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(&page, &[("decision", "reject")]),
    )
    .await;
    assert_eq!(lost.status, StatusCode::CONFLICT);
    assert!(lost.has("Your decision was not recorded: it was decided already"));
    assert!(
        lost.has("Approved by <b><bdi>alice</bdi></b>"),
        "{}",
        lost.body
    );
    assert_eq!(status_of(&server, &bot, &id).await["status"], "approved");

    // The call changed (another approver edited it) while the page was open.
    let id = server.ask(&bot, deploy()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &alice,
            json!({"decision": "edit", "args": {"service": "api", "version": "9.9.9"}}),
        )
        .await;
    let lost = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(&page, &[("decision", "approve")]),
    )
    .await;
    assert_eq!(lost.status, StatusCode::CONFLICT);
    assert!(
        lost.has("Your decision was not recorded: the call changed"),
        "{}",
        lost.body
    );
    assert!(lost.has("9.9.9"), "the page shows the call as it now is");
    assert_ne!(lost.field("fingerprint"), page.field("fingerprint"));
    let approval = status_of(&server, &bot, &id).await;
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["approved_by"], json!(["alice"]));
    server.stop().await;
}

#[tokio::test]
async fn grants_are_made_with_a_decision_and_revoked_from_their_page() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let carol = server.token("carol", Role::Approver, &[]).await;
    let id = server.ask(&bot, send_email("sally@gmail.com")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    let bad = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(
            &page,
            &[
                ("decision", "approve"),
                ("grant", "uses"),
                ("grant_uses", "0"),
            ],
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("would cover nothing"), "{}", bad.body);
    assert_eq!(status_of(&server, &bot, &id).await["status"], "pending");
    let done = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(
            &page,
            &[
                ("decision", "approve"),
                ("grant", "uses"),
                ("grant_uses", "3"),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    // The grant covers the agent's next call at once.
    let next = server.ask(&bot, send_email("tom@gmail.com")).await;
    assert_eq!(next["status"], "approved");

    let grants = web.get("/inbox/grants").await;
    assert!(grants.has("for 3 calls (2 left)"), "{}", grants.body);
    assert!(grants.has(r#"<span class="badge badge-live">live</span>"#));
    let grant_id = {
        let marker = r#"<li class="item" data-id=""#;
        let start = grants.body.find(marker).unwrap() + marker.len();
        grants.body[start..start + grants.body[start..].find('"').unwrap()].to_owned()
    };
    let revoke = format!("/inbox/grants/{grant_id}/revoke");

    // Carol did not make it and is no admin.
    let mut carols = Web::new(&server);
    carols.sign_in(&carol).await;
    let theirs = carols.get("/inbox/grants").await;
    assert!(!theirs.has(&revoke), "no button for carol");
    let refused = carols.post(&revoke, &[("csrf", &theirs.csrf())]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.has("only they and admins may revoke it"));

    let refused = web.post(&revoke, &[("csrf", "x")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (_, list) = server.get("/v1/grants", &alice).await;
    assert_eq!(list["grants"][0]["state"], "live");

    let done = web.post(&revoke, &[("csrf", &grants.csrf())]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/inbox/grants");
    let (_, list) = server.get("/v1/grants", &alice).await;
    assert_eq!(list["grants"][0]["state"], "revoked");
    let again = web.post(&revoke, &[("csrf", &grants.csrf())]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.has("revoked already"));
    let next = server.ask(&bot, send_email("ann@gmail.com")).await;
    assert_eq!(next["status"], "pending");

    // The page shows the live grants unless asked for all.
    let live = web.get("/inbox/grants").await;
    assert!(!live.has(&grant_id), "{}", live.body);
    assert!(live.has("No grant covers calls now."), "{}", live.body);
    let all = web.get("/inbox/grants?state=all").await;
    assert!(all.has(&grant_id), "{}", all.body);
    assert!(all.has(r#"<span class="badge badge-revoked">revoked</span>"#));
    assert!(!all.has(&revoke), "no button for a revoked grant");
    let bad = web.get("/inbox/grants?state=dead").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.has("unknown grant state `dead`: use `live` or `all`"),
        "{}",
        bad.body
    );
    server.stop().await;
}

#[tokio::test]
async fn admins_make_and_revoke_tokens_on_the_tokens_page() {
    let server = server().await;
    let root = server.token("root", Role::Admin, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;

    // Approvers see no link, and the page and its forms refuse them.
    let mut alices = Web::new(&server);
    alices.sign_in(&alice).await;
    let inbox = alices.get("/inbox").await;
    assert!(!inbox.has(r#"href="/inbox/tokens""#), "{}", inbox.body);
    let refused = alices.get("/inbox/tokens").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.has("only admins manage tokens"), "{}", refused.body);
    let made = alices
        .post(
            "/inbox/tokens",
            &[("csrf", &inbox.csrf()), ("name", "eve"), ("role", "admin")],
        )
        .await;
    assert_eq!(made.status, StatusCode::FORBIDDEN);
    assert_eq!(server.store.tokens().await.unwrap().len(), 2);

    let mut web = Web::new(&server);
    web.sign_in(&root).await;
    let page = web.get("/inbox/tokens").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.has(r#"href="/inbox/tokens" aria-current="page""#),
        "{}",
        page.body
    );
    assert!(page.has("alice") && page.has("root"));
    assert!(!page.has(&alice), "no secret is ever listed");

    // A form without the session's CSRF token makes nothing.
    let forged = web
        .post(
            "/inbox/tokens",
            &[("csrf", "x"), ("name", "eve"), ("role", "agent")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // Bad input says what was wrong and makes nothing.
    for (fields, says) in [
        (vec![("name", "e ve"), ("role", "agent")], "principal name"),
        (vec![("name", "eve"), ("role", "boss")], "not a role"),
        (
            vec![("name", "eve"), ("role", "agent"), ("expires_in", "soon")],
            "must be a duration",
        ),
    ] {
        let csrf = page.csrf();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let bad = web.post("/inbox/tokens", &form).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{says}");
        assert!(
            bad.has("No token was made") && bad.has(says),
            "{}",
            bad.body
        );
    }
    assert_eq!(server.store.tokens().await.unwrap().len(), 2);

    // Made: the secret is shown this once, and works for the principal.
    let made = web
        .post(
            "/inbox/tokens",
            &[
                ("csrf", &page.csrf()),
                ("name", "bob"),
                ("role", "approver"),
                ("groups", "ops, sre"),
                ("expires_in", "12h"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    assert_eq!(made.headers["cache-control"], "no-store");
    let secret = {
        let marker = r#"<code id="secret">"#;
        let start = made.body.find(marker).unwrap() + marker.len();
        made.body[start..start + made.body[start..].find('<').unwrap()].to_owned()
    };
    assert!(secret.starts_with("tg_"), "{secret}");
    let (status, me) = server.get("/v1/me", &secret).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&me["name"], &me["groups"]),
        (&json!("bob"), &json!(["ops", "sre"]))
    );
    let again = web.get("/inbox/tokens").await;
    assert!(!again.has(&secret), "the secret is not shown again");
    let id = me["token_id"].as_str().unwrap().to_owned();
    assert!(again.has(&id));
    assert!(again.has("groups ops, sre"), "{}", again.body);

    // Revoked: refused at once, and the page says so.
    let revoke = format!("/inbox/tokens/{id}/revoke");
    assert!(again.has(&revoke));
    let forged = web.post(&revoke, &[("csrf", "x")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(server.get("/v1/me", &secret).await.0, StatusCode::OK);
    let done = web.post(&revoke, &[("csrf", &again.csrf())]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), "/inbox/tokens");
    assert!(
        done.set_cookies()
            .iter()
            .any(|c| c.starts_with("toolgate_flash=token-revoked;")),
        "{:?}",
        done.set_cookies()
    );
    let session = web.cookie.clone().unwrap();
    web.cookie = Some(format!("{session}; toolgate_flash=token-revoked"));
    let after = web.get("/inbox/tokens").await;
    web.cookie = Some(session);
    assert!(after.has("The token is revoked"), "{}", after.body);
    assert!(after.has(r#"<span class="badge badge-revoked">revoked</span>"#));
    assert!(!after.has(&revoke), "no button for a revoked token");
    assert_eq!(
        server.get("/v1/me", &secret).await.0,
        StatusCode::UNAUTHORIZED
    );
    let twice = web.post(&revoke, &[("csrf", &again.csrf())]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.has("revoked already"), "{}", twice.body);
    let unknown = web
        .post(
            "/inbox/tokens/tok_nobody/revoke",
            &[("csrf", &again.csrf())],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // The audit log names root for both.
    let acts: Vec<String> = server
        .store
        .audit(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.body.contains(&id))
        .map(|entry| entry.kind)
        .collect();
    assert_eq!(acts, ["token_created", "token_revoked"]);
    server.stop().await;
}

#[tokio::test]
async fn the_grants_page_goes_back_a_page_at_a_time() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut made = Vec::new();
    for i in 0..26 {
        made.push(
            server
                .grant_for_run(&bot, &alice, &format!("agent-run-{i}"))
                .await,
        );
    }
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;
    let items = |page: &Page| page.body.matches(r#"<li class="item""#).count();
    let first = web.get("/inbox/grants").await;
    assert_eq!(items(&first), 25, "{}", first.body);
    assert!(first.has(&made[25]), "the newest first");
    assert!(!first.has(&made[0]));
    let older = format!(r#"href="/inbox/grants?state=live&amp;before={}""#, made[1]);
    assert!(first.has(&older), "{}", first.body);
    assert!(!first.has("← Newest"));

    let second = web
        .get(&format!("/inbox/grants?state=live&before={}", made[1]))
        .await;
    assert_eq!(items(&second), 1, "{}", second.body);
    assert!(second.has(&made[0]));
    assert!(second.has("← Newest"));
    assert!(!second.has("Older →"));
    let unknown = web.get("/inbox/grants?before=g-nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.has("there is no grant `g-nope`"),
        "{}",
        unknown.body
    );
    server.stop().await;
}

/// Text agents control, each crafted to run script, break out of an
/// attribute or a textarea, or mislead the eye.
fn hostile_call() -> Value {
    let mut deep = json!("bottom of the well");
    for _ in 0..100 {
        deep = json!({ "down": deep });
    }
    json!({
        "tool": "run_script",
        "description": "Runs a script.</title><script>document.title='pwned'</script>\u{202E}gnp.exe",
        "args": {
            "file": "invoice\u{202E}fdp.exe",
            "who": "pay\u{200B}pal",
            "command": "<script>window.__pwned = 1; document.title = 'pwned'</script>",
            "note": "\"><img src=x onerror=\"window.__pwned=2;document.title='pwned'\">",
            "close": "</textarea><script>window.__pwned=3</script>",
            "quote": "it's \"quoted\" & <b>bold</b>",
            "smuggled": "hello\u{E0049}\u{E0047}\u{E004E}",
            "long": "A".repeat(5000),
            "deep": deep
        },
        "schema": {
            "type": "object",
            "description": "\"'></textarea><script>window.__pwned=4</script>"
        },
        "context": {
            "why": "'><svg onload=\"window.__pwned=5\">",
            "frame": "<iframe src=\"javascript:window.__pwned=6\"></iframe>"
        }
    })
}

#[tokio::test]
async fn hostile_text_is_escaped_and_hidden_characters_are_shown() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let id = server.ask(&bot, hostile_call()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut web = Web::new(&server);
    web.sign_in(&alice).await;

    let list = web.get("/inbox").await;
    let page = web.get(&format!("/inbox/approvals/{id}")).await;
    for (what, page) in [("list", &list), ("approval", &page)] {
        let body = &page.body;
        assert_eq!(
            body.matches("<script").count(),
            1,
            "{what}: only the inbox's own script: {body}"
        );
        assert!(body.contains(r#"<script src="/inbox/assets/inbox.js" defer></script>"#));
        for raw in [
            "<img",
            "<svg",
            "<iframe",
            "<b>bold",
            "onerror=\"",
            "onload=\"",
        ] {
            assert!(!body.contains(raw), "{what}: {raw} in {body}");
        }
        for hidden in ['\u{202E}', '\u{200B}', '\u{E0049}'] {
            assert!(!body.contains(hidden), "{what}: {hidden:?} shown raw");
        }
        assert!(body.contains(r"invoice\u202efdp.exe"), "{what}");
        assert!(body.contains(r"pay\u200bpal"), "{what}");
    }
    let body = &page.body;
    assert!(
        body.contains(
            "&lt;script&gt;window.__pwned = 1; document.title = &#39;pwned&#39;&lt;/script&gt;"
        ) || body
            .contains("&lt;script&gt;window.__pwned = 1; document.title = 'pwned'&lt;/script&gt;")
    );
    assert!(body.contains(r"\u003c") || body.contains("&lt;/textarea&gt;"));
    assert_eq!(
        body.matches("</textarea>").count(),
        2,
        "the two textareas close once each"
    );
    assert!(body.contains(r"hello\udb40\udc49\udb40\udc47\udb40\udc4e"));
    assert!(
        body.contains(&"A".repeat(5000)),
        "long strings are shown whole"
    );
    assert!(
        body.contains("bottom of the well"),
        "so is the bottom of deep JSON"
    );
    assert!(body.contains(r#"Runs a script.&lt;/title&gt;&lt;script&gt;"#));
    assert!(
        body.contains(
            r#"<span class="hidden-char" title="a hidden character">U+202E</span>gnp.exe"#
        )
    );
    assert!(body.contains("Hidden characters"));
    assert!(body.contains("<title>run_script · toolgate</title>"));
    // The schema sits in an attribute: its quotes cannot end it.
    assert!(body.contains(r#"data-schema="{&quot;type&quot;:&quot;object&quot;,&quot;description&quot;:&quot;\&quot;&#39;&gt;&lt;/textarea&gt;"#)
        || body.contains(r#"data-schema="{&quot;type&quot;:&quot;object&quot;,&quot;description&quot;:&quot;\&quot;'&gt;&lt;/textarea&gt;"#),
        "{body}");

    // A rejection message is the person's text, and escaped too.
    let done = post_fields(
        &web,
        &format!("/inbox/approvals/{id}/decision"),
        &decision_fields(
            &page,
            &[
                ("decision", "reject"),
                ("message", "<script>alert('no')</script>\u{202E}"),
            ],
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let shown = web.get(&format!("/inbox/approvals/{id}")).await;
    assert_eq!(shown.body.matches("<script").count(), 1);
    assert!(shown.has("&lt;script&gt;alert("));
    assert!(!shown.body.contains('\u{202E}'));
    let rejected = web.get("/inbox?status=rejected").await;
    assert_eq!(rejected.body.matches("<script").count(), 1);
    server.stop().await;
}
