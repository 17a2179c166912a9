//! The web inbox in headless Chromium against a real server and store, as
//! an approver uses it: sign in, watch a request arrive live, edit its
//! arguments and approve them, and see that the agent gets them; hostile
//! text that stays inert and readable; a phone-sized screen. Screenshots
//! are kept in `inbox-screenshots` in the target directory.

mod common;

use common::browser::{Browser, skipped};
use common::{TestServer, send_email};
use serde_json::{Value, json};
use toolgate_core::Role;

/// One Chromium at a time: the machines that run this have few cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const POLICY: &str = r#"
[[policy.rules]]
name = "outside mail"
tool = "send_email"
action = "ask"
"#;

async fn sign_in(browser: &Browser, server: &TestServer, token: &str) {
    browser.goto(&server.url("/")).await;
    let field = browser.find("#token").await;
    assert!(browser.current_url().await.ends_with("/inbox/login"));
    field.type_text(token).await;
    browser
        .find("form.login button[type=submit]")
        .await
        .click()
        .await;
    browser
        .wait_for(
            "the inbox after signing in",
            "return location.pathname === '/inbox' && !!document.getElementById('approvals');",
            json!([]),
        )
        .await;
}

/// Nothing an agent sent ran: no global set, the title untouched, no
/// element made from its markup.
async fn assert_inert(browser: &Browser, title: &str) {
    let state = browser
        .js(
            "return [typeof window.__pwned, document.title, \
             document.querySelectorAll('main img, main svg, main iframe, main script, pre.json code *, .summary code *').length];",
            json!([]),
        )
        .await;
    assert_eq!(state, json!(["undefined", title, 0]), "{state}");
}

/// The page is no wider than the screen: long text wraps or scrolls in
/// its own box.
async fn assert_fits(browser: &Browser, what: &str) {
    let widths = browser
        .js(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
            json!([]),
        )
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "{what}: the page is wider than the screen: {widths}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_sees_a_call_arrive_edits_it_and_the_agent_gets_the_edit() {
    if skipped() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(POLICY).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &server, &alice).await;
    assert!(
        browser
            .find("p.empty")
            .await
            .text()
            .await
            .contains("Nothing is waiting")
    );
    // The page follows the event stream before anything is asked.
    browser
        .wait_for(
            "the live stream",
            "return document.getElementById('live').getAttribute('data-live') === 'on';",
            json!([]),
        )
        .await;

    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let item = browser
        .find(&format!("li.item[data-id='{id}'] a.tool"))
        .await;
    assert_eq!(item.text().await, "send_email");
    let card = browser
        .find(&format!("li.item[data-id='{id}']"))
        .await
        .text()
        .await;
    assert!(card.contains(r#"recipient: "sally@gmail.com""#), "{card}");
    assert!(card.contains("asked by bot"), "{card}");
    assert!(card.contains("0 of 1 approval"), "{card}");
    assert!(
        browser
            .find("#live")
            .await
            .text()
            .await
            .contains("1 new approval")
    );
    browser.screenshot("desktop-list-live").await;

    item.click().await;
    browser
        .wait_for(
            "the approval's page",
            "return location.pathname === arguments[0];",
            json!([format!("/inbox/approvals/{id}")]),
        )
        .await;
    let args = browser.find("pre.json").await.text().await;
    assert!(args.contains(r#""recipient": "sally@gmail.com""#), "{args}");
    assert!(
        browser
            .find(".status-line")
            .await
            .text()
            .await
            .contains("Waiting for 1 more approval")
    );

    // A wrong edit is caught in the page, and nothing is sent.
    browser.find("#edit summary").await.click().await;
    let textarea = browser.find("#args").await;
    textarea.clear().await;
    textarea
        .type_text(r#"{"recipient": 42, "message": "hi", "bcc": "x@y.z"}"#)
        .await;
    browser.find("#approve-edited").await.click().await;
    let errors = browser.find("#args-errors li").await;
    let errors_text = browser.find("#args-errors").await.text().await;
    assert!(
        errors.text().await.contains("recipient: must be string"),
        "{errors_text}"
    );
    assert!(
        errors_text.contains("bcc: is not an argument of this tool"),
        "{errors_text}"
    );
    assert_eq!(
        browser
            .js(
                "return document.getElementById('args').getAttribute('aria-invalid');",
                json!([])
            )
            .await,
        json!("true")
    );
    browser.screenshot("desktop-edit-refused-in-the-page").await;
    let (_, still) = server.get(&format!("/v1/approvals/{id}"), &bot).await;
    assert_eq!(still["status"], "pending");

    textarea.clear().await;
    textarea
        .type_text(r#"{"recipient": "sally@example.com", "message": "Edited in the browser"}"#)
        .await;
    browser.find("#approve-edited").await.click().await;
    let notice = browser.find(".notice.success").await.text().await;
    assert!(notice.contains("Approved with your arguments"), "{notice}");
    assert!(
        browser
            .find(".status-line")
            .await
            .text()
            .await
            .contains("Approved with edited arguments by alice")
    );
    browser.screenshot("desktop-approval-edited").await;

    // What the agent, waiting on the API, is told.
    let (_, answer) = server
        .get(&format!("/v1/approvals/{id}?wait=5s"), &bot)
        .await;
    assert_eq!(answer["status"], "edited");
    assert_eq!(
        answer["args"],
        json!({"recipient": "sally@example.com", "message": "Edited in the browser"})
    );
    assert_eq!(answer["decided_by"], "alice");

    // Someone else decides while the page is open: it says so at once, and
    // its buttons no longer send anything.
    let other = server.ask(&bot, send_email("tom@gmail.com")).await;
    let other = other["id"].as_str().unwrap();
    browser
        .goto(&server.url(&format!("/inbox/approvals/{other}")))
        .await;
    browser.find("#approve").await;
    browser
        .wait_for(
            "the approval's page following the stream",
            "return document.querySelector('[data-approval-id]').getAttribute('data-live') === 'on';",
            json!([]),
        )
        .await;
    let carol = server.token("carol", Role::Approver, &[]).await;
    server
        .post(
            &format!("/v1/approvals/{other}/decision"),
            &carol,
            json!({"decision": "reject", "message": "not now"}),
        )
        .await;
    browser
        .wait_for(
            "the banner",
            "return !document.getElementById('changed').hidden;",
            json!([]),
        )
        .await;
    let banner = browser.find("#changed").await.text().await;
    assert!(
        banner.contains("This approval is now rejected (by carol)."),
        "{banner}"
    );
    assert_eq!(
        browser
            .js(
                "return document.getElementById('approve').disabled;",
                json!([])
            )
            .await,
        json!(true)
    );
    browser.screenshot("desktop-decided-elsewhere").await;
    drop(browser);
    server.stop().await;
}

fn hostile_call() -> Value {
    let mut deep = json!("bottom of the well");
    for _ in 0..60 {
        deep = json!({ "down": deep });
    }
    json!({
        "tool": "run_script",
        "description": "Runs a script.</title><script>document.title='pwned'</script>",
        "args": {
            "file": "invoice\u{202E}fdp.exe",
            "command": "<script>window.__pwned = 1; document.title = 'pwned'</script>",
            "note": "\"><img src=x onerror=\"window.__pwned=2;document.title='pwned'\">",
            "close": "</textarea><script>window.__pwned=3</script>",
            "quote": "it's \"quoted\" & <b>bold</b>",
            "long": "W".repeat(3000),
            "deep": deep
        },
        "context": {
            "why": "'><svg onload=\"window.__pwned=5\">",
            "frame": "<iframe src=\"javascript:window.__pwned=6\"></iframe>"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_stay_text_readable_and_inside_the_screen() {
    if skipped() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(POLICY).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let id = server.ask(&bot, hostile_call()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &server, &alice).await;
    let card = browser
        .find(&format!("li.item[data-id='{id}']"))
        .await
        .text()
        .await;
    assert!(card.contains(r"invoice\u202efdp.exe"), "{card}");
    assert_inert(&browser, "Approvals · toolgate").await;

    browser
        .goto(&server.url(&format!("/inbox/approvals/{id}")))
        .await;
    let args = browser.find("pre.json").await.text().await;
    for readable in [
        "<script>window.__pwned = 1; document.title = 'pwned'</script>",
        r#"\"><img src=x onerror=\"window.__pwned=2;document.title='pwned'\">"#,
        "</textarea><script>window.__pwned=3</script>",
        r#"it's \"quoted\" & <b>bold</b>"#,
        r"invoice\u202efdp.exe",
        "bottom of the well",
    ] {
        assert!(args.contains(readable), "{readable} not shown in {args}");
    }
    assert!(args.replace('\n', "").contains(&"W".repeat(3000)));
    let context = browser
        .js(
            "return document.querySelectorAll('pre.json')[1].innerText;",
            json!([]),
        )
        .await;
    assert!(
        context.as_str().unwrap().contains("<svg onload="),
        "{context}"
    );
    let description = browser.find("p.description").await.text().await;
    assert!(description.contains("</title><script>"), "{description}");
    assert!(
        browser
            .find(".notice.warn")
            .await
            .text()
            .await
            .contains("Hidden characters")
    );
    assert_inert(&browser, "run_script · toolgate").await;
    assert_fits(&browser, "desktop").await;
    // The edit box holds the same text, and it is still the same JSON.
    let edit = browser
        .js(
            "return JSON.parse(document.getElementById('args').value).command;",
            json!([]),
        )
        .await;
    assert_eq!(
        edit,
        json!("<script>window.__pwned = 1; document.title = 'pwned'</script>")
    );

    browser.viewport(375, 812, true).await;
    browser
        .goto(&server.url(&format!("/inbox/approvals/{id}")))
        .await;
    browser.find("pre.json").await;
    assert_inert(&browser, "run_script · toolgate").await;
    assert_fits(&browser, "phone").await;
    browser.screenshot("phone-hostile-approval").await;
    drop(browser);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_inbox_fits_and_works() {
    if skipped() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start(POLICY).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut last = String::new();
    for (recipient, message) in [
        ("sally@gmail.com", "What's up homie"),
        (
            "accounts-payable-department-of-a-very-long-company-name@example-subsidiary.co.uk",
            "Invoice 2024-117 attached",
        ),
        ("tom@gmail.com", "Lunch?"),
    ] {
        let mut body = send_email(recipient);
        body["args"]["message"] = json!(message);
        last = server.ask(&bot, body).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let browser = Browser::start(375, 812).await;
    browser.viewport(375, 812, true).await;
    browser.goto(&server.url("/")).await;
    browser.find("#token").await;
    assert_fits(&browser, "the sign-in page").await;
    browser.screenshot("phone-sign-in").await;
    sign_in(&browser, &server, &alice).await;
    assert_eq!(
        browser
            .js(
                "return document.querySelectorAll('li.item').length;",
                json!([])
            )
            .await,
        json!(3)
    );
    assert_fits(&browser, "the list").await;
    browser.screenshot("phone-list").await;

    browser
        .goto(&server.url(&format!("/inbox/approvals/{last}")))
        .await;
    browser.find("#approve").await;
    assert_fits(&browser, "an approval").await;
    browser.screenshot("phone-approval").await;
    // By keyboard: the first Tab reaches the skip link; Enter on Approve
    // decides.
    browser.key("\u{E004}").await;
    let focused = browser
        .js("return document.activeElement.textContent;", json!([]))
        .await;
    assert_eq!(focused, json!("Skip to the content"));
    browser
        .js("document.getElementById('approve').focus();", json!([]))
        .await;
    browser.key("\u{E007}").await;
    let notice = browser.find(".notice.success").await.text().await;
    assert!(notice.contains("Approved"), "{notice}");
    let (_, answer) = server.get(&format!("/v1/approvals/{last}"), &bot).await;
    assert_eq!(answer["status"], "approved");
    assert_fits(&browser, "the decided approval").await;
    browser.screenshot("phone-approved").await;

    // A grant, made with a decision over the API, on the grants page: live
    // by default, with the filters to see all.
    server.grant_for_run(&bot, &alice, "agent-run-grants").await;
    browser.goto(&server.url("/inbox/grants")).await;
    let shown = browser.find("li.item .badge").await.text().await;
    assert_eq!(
        shown.to_lowercase(),
        "live",
        "as the badge shows it: {shown}"
    );
    let current = browser
        .find("nav.filters a[aria-current=page]")
        .await
        .text()
        .await;
    assert_eq!(current, "Live");
    assert_fits(&browser, "the grants").await;
    browser.screenshot("phone-grants").await;

    // An admin makes a token on the tokens page: its secret is shown once.
    browser
        .find("header .who button[type=submit]")
        .await
        .click()
        .await;
    browser
        .wait_for(
            "the sign-in page after signing out",
            "return location.pathname === '/inbox/login';",
            json!([]),
        )
        .await;
    let root = server.token("root", Role::Admin, &[]).await;
    sign_in(&browser, &server, &root).await;
    browser
        .find("nav.main-nav a[href='/inbox/tokens']")
        .await
        .click()
        .await;
    browser.find("#name").await.type_text("dana").await;
    browser.find("#groups").await.type_text("ops, sre").await;
    browser
        .find("form.make-token button[type=submit]")
        .await
        .click()
        .await;
    let secret = browser.find("#secret").await.text().await;
    let (status, me) = server.get("/v1/me", &secret).await;
    assert_eq!((status.as_u16(), &me["name"]), (200, &json!("dana")));
    assert_fits(&browser, "the tokens page").await;
    browser.screenshot("phone-tokens").await;
    drop(browser);
    server.stop().await;
}
