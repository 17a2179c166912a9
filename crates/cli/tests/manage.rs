//! The management commands end to end: `toolgate approvals`, `runs`,
//! `grants` and `audit`, the built binary run against real SQLite files
//! that the library filled with real runs.
//!
//! The runs are the seed's: "Send sally@gmail.com an email …" makes the
//! scripted model call `send_email`, which is destructive, so the run
//! suspends with one pending approval. Ids and times differ from run to
//! run; the golden texts have them replaced by placeholders of the same
//! width (see `normal`), so that the alignment of tables is still checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use expect_test::{Expect, expect};
use serde_json::Value;
use toolgate::run::{Event, RunState};
use toolgate::store::{Append, ApprovalRow, RunRow, Store};
use toolgate::{Agent, ChatModel, Message, Policy, RunOptions, RunOutcome, SqliteStore, seed};

mod common;

const SEND: &str = seed::PROMPTS[1];

/// A store file in a fresh directory.
struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
    runtime: tokio::runtime::Runtime,
}

/// What the binary did.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A run the library started, waiting for its approval.
struct Waiting {
    run: String,
    approval: ApprovalRow,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("toolgate.db");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // An existing, empty store: the management commands refuse to make
        // one (a mistyped --db must not look like an empty store).
        drop(SqliteStore::open(&db).unwrap());
        Fixture { dir, db, runtime }
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.db).unwrap())
    }

    /// Starts the seed's send_email run under `policy`; it waits for one
    /// approval.
    fn start(&self, policy: Option<&str>, options: RunOptions) -> Waiting {
        self.start_with(policy, options, |agent| agent)
    }

    /// [`Fixture::start`], with the agent set up further by `setup`.
    fn start_with(
        &self,
        policy: Option<&str>,
        options: RunOptions,
        setup: impl FnOnce(Agent) -> Agent,
    ) -> Waiting {
        self.runtime.block_on(async {
            let model: Arc<dyn ChatModel> = Arc::new(seed::model());
            let mut agent = setup(Agent::new(model, seed::tools()).store(self.store()));
            if let Some(policy) = policy {
                agent = agent.policy(Policy::from_toml_str(policy, "test.toml").unwrap());
            }
            match agent.start(SEND, options).await.unwrap() {
                RunOutcome::Waiting {
                    run_id,
                    mut approvals,
                    ..
                } => {
                    assert_eq!(approvals.len(), 1);
                    Waiting {
                        run: run_id,
                        approval: approvals.remove(0),
                    }
                }
                other => panic!("the run should wait for an approval: {other:?}"),
            }
        })
    }

    fn send(&self) -> Waiting {
        self.start(None, RunOptions::default().principal("tester"))
    }

    /// Runs `toolgate --db DB ARGS…` as alice, through pipes.
    fn toolgate(&self, args: &[&str]) -> Ran {
        self.toolgate_with(args, &[])
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("TOOLGATE_USER", "alice")
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(&self.db)
            .args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    fn toolgate_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let output = self.command(args, env).output().unwrap();
        Ran {
            code: output.status.code().expect("toolgate exits with a code"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// `toolgate ARGS…`, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.toolgate(args);
        assert_eq!(ran.code, 0, "toolgate {args:?} failed:\n{}", ran.stderr);
        ran.stdout
    }

    /// `toolgate ARGS…`, which must fail with `code`; its error output.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let ran = self.toolgate(args);
        assert_eq!(
            ran.code, code,
            "toolgate {args:?}:\nstdout: {}\nstderr: {}",
            ran.stdout, ran.stderr
        );
        assert_eq!(ran.stdout, "", "errors go to standard error");
        ran.stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn events(&self, run: &str) -> Vec<Event> {
        self.runtime.block_on(async {
            let store = self.store();
            store
                .load(run)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event)
                .collect()
        })
    }

    /// Appends `event` to the run's log, as the engine would.
    fn append(&self, run: &str, event: Event) {
        self.runtime.block_on(async {
            let store = self.store();
            let events = store.load(run).await.unwrap();
            let mut state = RunState::fold(events.iter().map(|e| &e.event));
            let expected_version = state.version;
            state.apply(&event);
            let row = RunRow {
                id: run.to_owned(),
                status: state.status.as_str().to_owned(),
                thread: state.thread.clone(),
                prompt: SEND.to_owned(),
                created_at: events[0].at,
                updated_at: events[0].at,
                version: state.version,
            };
            store
                .append(Append {
                    run_id: run.to_owned(),
                    expected_version,
                    events: vec![event],
                    run: row,
                    approvals: Vec::new(),
                    grants: Vec::new(),
                    lease: None,
                })
                .await
                .unwrap();
        })
    }

    fn script(&self) -> String {
        let path = self.dir.path().join("seed.json");
        std::fs::write(&path, seed::SCRIPT).unwrap();
        format!("scripted:{}", path.display())
    }
}

/// `text` with what differs from run to run replaced: the names given
/// (ids), any other id, and times, each by a placeholder as wide as what it
/// replaces.
fn normal(text: &str, names: &[(&str, &str)]) -> String {
    fn placeholder(name: &str, width: usize) -> String {
        let tag = format!("<{name}>");
        let dots = width.saturating_sub(tag.len());
        format!("{tag}{}", ".".repeat(dots))
    }
    let mut text = text.to_owned();
    for (value, name) in names {
        text = text.replace(value, &placeholder(name, value.len()));
    }
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let text = uuid.replace_all(&text, placeholder("ID", 36).as_str());
    let time = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z").unwrap();
    time.replace_all(&text, placeholder("TIME", 20).as_str())
        .into_owned()
}

fn check(text: &str, names: &[(&str, &str)], expect: Expect) {
    expect.assert_eq(&normal(text, names));
}

#[test]
fn approvals_list_shows_pending_calls_as_a_table_and_as_json() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let names = [
        (waiting.run.as_str(), "RUN"),
        (waiting.approval.id.as_str(), "APPROVAL"),
    ];

    check(
        &fx.ok(&["approvals", "list"]),
        &names,
        expect![[r#"
            ID                                    TOOL        ARGUMENTS                                                    STATUS   RULE     REQUESTED             BY  RUN
            <APPROVAL>..........................  send_email  {"recipient":"sally@gmail.com","message":"What's up homie"}  pending  default  <TIME>..............      <RUN>...............................
        "#]],
    );
    check(
        &fx.ok(&["approvals", "list", "--json"]),
        &names,
        expect![[r#"
            [
              {
                "id": "<APPROVAL>..........................",
                "run_id": "<RUN>...............................",
                "call_id": "toolu_014XccHFzBiVcc9GV1harV9U",
                "tool": "send_email",
                "args": {
                  "recipient": "sally@gmail.com",
                  "message": "What's up homie"
                },
                "fingerprint": "bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6",
                "status": "pending",
                "rule": "default",
                "quorum": 1,
                "approvers": [],
                "requested_at": "<TIME>..............",
                "expires_at": null,
                "decided_by": null,
                "decided_at": null
              }
            ]
        "#]],
    );
    // The filters: by run, by status; an empty listing prints nothing on a
    // pipe, and an empty array with --json.
    assert_eq!(
        fx.json(&["approvals", "list", "--run", &waiting.run, "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        fx.ok(&["approvals", "list", "--status", "approved,rejected"]),
        ""
    );
    assert_eq!(
        fx.ok(&["approvals", "list", "--status", "approved", "--json"]),
        "[]\n"
    );
    assert_eq!(
        fx.json(&[
            "approvals",
            "list",
            "--status",
            "all",
            "--limit",
            "1",
            "--json"
        ])
        .as_array()
        .unwrap()
        .len(),
        1
    );
    check(
        &fx.fails(1, &["approvals", "list", "--run", "no-such-run"]),
        &names,
        expect![[r#"
            error: there is no run `no-such-run`; `toolgate runs list --status all` lists them
        "#]],
    );
    let usage = fx.fails(2, &["approvals", "list", "--status", "done"]);
    assert!(
        usage.contains("invalid value 'done' for '--status <STATUS>'"),
        "{usage}"
    );
    assert!(
        fx.fails(2, &["approvals", "list", "--limit", "0"])
            .contains("--limit")
    );
}

#[test]
fn approvals_show_prints_the_call_who_may_decide_and_the_history() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.ok(&["approvals", "show", id]),
        &names,
        expect![[r#"
            Approval <APPROVAL>..........................: pending

              Tool         send_email: Dummy function for sending an e-mail.
              Run          <RUN>............................... (call toolu_014XccHFzBiVcc9GV1harV9U)
              Rule         default
              Approvers    anyone who may decide; 1 approval needed
              Requested    <TIME>..............
              Expires      never: it waits until someone decides
              Status       pending: waiting for 1 more approval
              Fingerprint  bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6

            Arguments
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }

            Decisions
              none yet

            Decide with `toolgate approvals approve <APPROVAL>..........................`, `toolgate approvals edit <APPROVAL>..........................` or `toolgate approvals reject <APPROVAL>.......................... --message TEXT`.
        "#]],
    );
    let detail = fx.json(&["approvals", "show", id, "--json"]);
    assert_eq!(detail["id"], id);
    assert_eq!(
        detail["description"],
        "Dummy function for sending an e-mail."
    );
    assert_eq!(detail["proposed_args"], detail["args"]);
    assert_eq!(detail["still_needed"], 1);
    assert_eq!(detail["decisions"], serde_json::json!([]));
    assert_eq!(
        detail["schema"]["required"],
        serde_json::json!(["message", "recipient"])
    );
    assert_eq!(detail["result"], Value::Null);

    check(
        &fx.fails(1, &["approvals", "show", "nope"]),
        &names,
        expect![[r#"
            error: there is no approval `nope`; `toolgate approvals list --status all` lists them
        "#]],
    );
}

#[test]
fn approving_binds_to_the_call_it_prints_and_the_run_completes() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.ok(&["approvals", "approve", id]),
        &names,
        expect![[r#"
            Approved send_email (approval <APPROVAL>..........................) as alice:
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }
              fingerprint bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6
            Resume the run with `toolgate runs resume <RUN>...............................`.
        "#]],
    );
    check(
        &fx.ok(&["approvals", "list", "--status", "all"]),
        &names,
        expect![[r#"
            ID                                    TOOL        ARGUMENTS                                                    STATUS    RULE     REQUESTED             BY     RUN
            <APPROVAL>..........................  send_email  {"recipient":"sally@gmail.com","message":"What's up homie"}  approved  default  <TIME>..............  alice  <RUN>...............................
        "#]],
    );
    // Deciding again names who decided, and when.
    check(
        &fx.fails(1, &["approvals", "reject", id, "--message", "no"]),
        &names,
        expect![[r#"
            error: approval <APPROVAL>.......................... was already approved by alice at <TIME>..............; a decided approval cannot be decided again (`toolgate approvals show <APPROVAL>..........................` shows its history)
        "#]],
    );

    // The run goes on, and the tool runs once.
    let resumed = fx.toolgate(&[
        "runs",
        "resume",
        &waiting.run,
        "--model",
        &fx.script(),
        "--no-stream",
    ]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let shown = fx.ok(&["approvals", "show", id]);
    let shown = normal(&shown, &names);
    assert!(
        shown.contains("  <TIME>..............  alice approved\n"),
        "{shown}"
    );
    assert!(
        shown.contains("Result\n  Successfully sent email to sally@gmail.com.\n"),
        "{shown}"
    );
    let detail = fx.json(&["approvals", "show", id, "--json"]);
    assert_eq!(detail["decisions"][0]["principal"], "alice");
    assert_eq!(detail["decisions"][0]["decision"], "approve");
    assert_eq!(
        detail["result"],
        serde_json::json!({"content": "Successfully sent email to sally@gmail.com.", "is_error": false})
    );
}

#[test]
fn a_decision_for_another_fingerprint_is_refused_and_nothing_is_decided() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    let other = "0".repeat(64);
    check(
        &fx.fails(1, &["approvals", "approve", id, "--fingerprint", &other]),
        &names,
        expect![[r#"
            error: approval <APPROVAL>.......................... is for the call with fingerprint bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6, not 0000000000000000000000000000000000000000000000000000000000000000: its arguments are not the ones you decided on (they were edited since, or the fingerprint is mistyped); look at it again with `toolgate approvals show <APPROVAL>..........................`. Nothing was decided
        "#]],
    );
    check(
        &fx.fails(1, &["approvals", "approve", id, "--fingerprint", "abc"]),
        &names,
        expect![[r#"
            error: --fingerprint `abc` is not a fingerprint: give the 64 hex digits `toolgate approvals show` prints
        "#]],
    );
    let still = fx.json(&["approvals", "show", id, "--json"]);
    assert_eq!(still["status"], "pending");
    // The right one, as `show` printed it, is accepted.
    let fingerprint = still["fingerprint"].as_str().unwrap();
    fx.ok(&["approvals", "approve", id, "--fingerprint", fingerprint]);
    assert_eq!(
        fx.json(&["approvals", "show", id, "--json"])["status"],
        "approved"
    );
}

#[test]
fn rejecting_tells_the_model_why() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.ok(&[
            "approvals",
            "reject",
            id,
            "--message",
            "too casual for Sally",
        ]),
        &names,
        expect![[r#"
            Rejected send_email (approval <APPROVAL>..........................) as alice:
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }
              fingerprint bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6
            The model will be told: alice rejected this call: too casual for Sally
            Resume the run with `toolgate runs resume <RUN>...............................`.
        "#]],
    );
    check(
        &fx.fails(1, &["approvals", "approve", id]),
        &names,
        expect![[r#"
            error: approval <APPROVAL>.......................... was already rejected by alice at <TIME>..............; a decided approval cannot be decided again (`toolgate approvals show <APPROVAL>..........................` shows its history)
        "#]],
    );
    let json = fx.json(&["approvals", "show", id, "--json"]);
    assert_eq!(json["decisions"][0]["decision"], "reject");
    assert_eq!(json["decisions"][0]["message"], "too casual for Sally");
    assert_eq!(
        json["result"]["content"],
        "alice rejected this call: too casual for Sally"
    );
    assert_eq!(json["result"]["is_error"], true);
}

#[test]
fn editing_with_args_checks_them_against_the_schema() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];

    check(
        &fx.fails(
            1,
            &[
                "approvals",
                "edit",
                id,
                "--args",
                r#"{"recipient": 7, "extra": true}"#,
            ],
        ),
        &names,
        expect![[r#"
            error: the new arguments do not fit the schema of `send_email`, so nothing was decided:
              - `message`: is required but missing
              - `recipient`: 7 is not of type "string"
              - `extra`: is not an argument of this tool
            The tool's JSON Schema is in `toolgate approvals show <APPROVAL>.......................... --json`.
        "#]],
    );
    check(
        &fx.fails(1, &["approvals", "edit", id, "--args", "{not json"]),
        &names,
        expect![[r#"
            error: --args is not valid JSON: key must be a string at line 1 column 2
        "#]],
    );
    check(
        &fx.fails(1, &["approvals", "edit", id, "--args", r#"["sally"]"#]),
        &names,
        expect![[r#"
            error: --args must be a JSON object of arguments, such as {"recipient": "sally@example.com"}, not an array
        "#]],
    );
    check(
        &fx.fails(
            1,
            &[
                "approvals",
                "edit",
                id,
                "--args",
                r#"{"message": "What's up homie", "recipient": "sally@gmail.com"}"#,
            ],
        ),
        &names,
        expect![[r#"
            error: the arguments given are the ones approval <APPROVAL>.......................... already has; to run the call as it is, use `toolgate approvals approve <APPROVAL>..........................`
        "#]],
    );
    assert_eq!(
        fx.json(&["approvals", "show", id, "--json"])["status"],
        "pending"
    );

    check(
        &fx.ok(&[
            "approvals",
            "edit",
            id,
            "--args",
            r#"{"message": "Hello Sally, how are you?", "recipient": "sally@gmail.com"}"#,
        ]),
        &names,
        expect![[r#"
            Edited send_email (approval <APPROVAL>..........................) as alice; it will run with:
              {
                "message": "Hello Sally, how are you?",
                "recipient": "sally@gmail.com"
              }
              fingerprint ac53f8d5fa1d6279b0696f7c9f3d8cee2b9c75f59993f6cdd5889bc805e4579d
            instead of:
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }
            Resume the run with `toolgate runs resume <RUN>...............................`.
        "#]],
    );
    let shown = normal(&fx.ok(&["approvals", "show", id]), &names);
    assert!(
        shown.contains("Approval <APPROVAL>..........................: edited\n"),
        "{shown}"
    );
    assert!(
        shown.contains(
            r#"  <TIME>..............  alice edited the arguments to {"message":"Hello Sally, how are you?","recipient":"sally@gmail.com"}"#
        ),
        "{shown}"
    );
    assert!(shown.contains("Arguments the model proposed\n"), "{shown}");
    // The tool runs with the edited arguments.
    let resumed = fx.toolgate(&[
        "runs",
        "resume",
        &waiting.run,
        "--model",
        &fx.script(),
        "--no-stream",
    ]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let started = fx
        .events(&waiting.run)
        .into_iter()
        .find_map(|event| match event {
            Event::ToolStarted { args, .. } => Some(args),
            _ => None,
        })
        .unwrap();
    assert_eq!(started["message"], "Hello Sally, how are you?");
}

#[test]
fn editing_in_an_editor_decides_only_what_was_saved() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];

    // Saved unchanged, or emptied: nothing is decided.
    let unchanged = fx.toolgate_with(&["approvals", "edit", id], &[("VISUAL", "true")]);
    assert_eq!(unchanged.code, 1);
    assert_eq!(
        unchanged.stderr,
        "Nothing was decided: the arguments were left unchanged.\n"
    );
    let emptied = fx.toolgate_with(&["approvals", "edit", id], &[("EDITOR", "cp /dev/null")]);
    assert_eq!(emptied.code, 1);
    assert_eq!(
        emptied.stderr,
        "Nothing was decided: the file was left empty.\n"
    );
    let failed = fx.toolgate_with(&["approvals", "edit", id], &[("EDITOR", "false")]);
    assert_eq!(failed.code, 1);
    assert_eq!(
        failed.stderr,
        "error: the editor `false` failed (exit status: 1); nothing was decided\n"
    );

    // Not JSON: refused, and the edit is kept for another try.
    let broken = fx.toolgate_with(
        &["approvals", "edit", id],
        &[("VISUAL", r#"sh -c 'echo "{oops" > "$1"' editor"#)],
    );
    assert_eq!(broken.code, 1);
    let kept = regex::Regex::new(r"your edit is kept in (\S+);")
        .unwrap()
        .captures(&broken.stderr)
        .unwrap_or_else(|| panic!("{}", broken.stderr))[1]
        .to_owned();
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "{oops\n");
    assert!(
        broken.stderr.ends_with(
            "the edited file is not valid JSON: key must be a string at line 1 column 2\n"
        ),
        "{}",
        broken.stderr
    );
    assert_eq!(
        fx.json(&["approvals", "show", id, "--json"])["status"],
        "pending"
    );

    // Changed: decided, with what was saved.
    let edited = fx.toolgate_with(
        &["approvals", "edit", id, "--json"],
        &[("VISUAL", "sed -i s/sally@gmail.com/bob@example.com/")],
    );
    assert_eq!(edited.code, 0, "{}", edited.stderr);
    let json: Value = serde_json::from_str(&edited.stdout).unwrap();
    assert_eq!(json["approval"]["status"], "edited");
    assert_eq!(json["approval"]["args"]["recipient"], "bob@example.com");
    assert_eq!(json["grant"], Value::Null);
    assert_eq!(json["run_status"], "running");

    // Nothing to edit any more: the editor does not even open.
    check(
        &fx.fails(1, &["approvals", "edit", id]),
        &names,
        expect![[r#"
            error: approval <APPROVAL>.......................... was already edited by alice at <TIME>..............; a decided approval cannot be decided again (`toolgate approvals show <APPROVAL>..........................` shows its history)
        "#]],
    );
}

#[test]
fn quorums_need_distinct_approvers() {
    let fx = Fixture::new();
    let policy = r#"
        [[policy.rules]]
        name = "two people"
        tool = "send_email"
        action = "ask"
        approvers = ["user:alice", "user:bob"]
        quorum = 2
        timeout = "30m"
    "#;
    let waiting = fx.start(Some(policy), RunOptions::default());
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.ok(&["approvals", "approve", id]),
        &names,
        expect![[r#"
            Recorded alice's approval of send_email (approval <APPROVAL>..........................); it needs 1 more from other approvers (user:alice, user:bob):
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }
              fingerprint bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6
            Run <RUN>............................... still waits for 1 approval: `toolgate approvals list --run <RUN>...............................`.
        "#]],
    );
    check(
        &fx.fails(1, &["approvals", "approve", id]),
        &names,
        expect![[r#"
            error: alice has already approved approval <APPROVAL>..........................; one person's approval counts once, and it needs 1 more from other approvers
        "#]],
    );
    let shown = normal(&fx.ok(&["approvals", "show", id]), &names);
    assert!(shown.contains("  Rule         two people\n"), "{shown}");
    assert!(
        shown.contains(
            "  Approvers    user:alice, user:bob; 2 approvals from distinct approvers needed\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("  Timeout      30m, then the call is rejected\n"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "  Status       pending: waiting for 1 more approval (approved so far by alice)\n"
        ),
        "{shown}"
    );
    let bob = fx.toolgate_with(&["approvals", "approve", id], &[("TOOLGATE_USER", "bob")]);
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    assert!(
        bob.stdout.starts_with("Approved send_email"),
        "{}",
        bob.stdout
    );
    let json = fx.json(&["approvals", "show", id, "--json"]);
    assert_eq!(json["approved_by"], serde_json::json!(["alice", "bob"]));
}

#[test]
fn approvals_past_their_time_are_listed_as_expired_and_cannot_be_decided() {
    let fx = Fixture::new();
    let policy = r#"
        [[policy.rules]]
        tool = "send_email"
        action = "ask"
        timeout = "1s"
    "#;
    // Asked for an hour ago, by the agent's clock: long past its time.
    let an_hour_ago = toolgate::time::to_millis(std::time::SystemTime::now()) - 3_600_000;
    let waiting = fx.start_with(Some(policy), RunOptions::default(), |agent| {
        agent.clock(Arc::new(move || an_hour_ago))
    });
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    assert_eq!(fx.ok(&["approvals", "list"]), "");
    let expired = fx.json(&["approvals", "list", "--status", "expired", "--json"]);
    assert_eq!(expired[0]["id"], id);
    assert_eq!(expired[0]["status"], "expired");
    check(
        &fx.fails(1, &["approvals", "approve", id]),
        &names,
        expect![[r#"
            error: approval <APPROVAL>.......................... expired at <TIME>..............: nobody decided in time, so its call was rejected; a decided approval cannot be decided again (`toolgate approvals show <APPROVAL>..........................` shows its history)
        "#]],
    );
    let shown = normal(&fx.ok(&["approvals", "show", id]), &names);
    assert!(
        shown.contains(
            "  <TIME>..............  nobody decided in time: expired, so the call was rejected\n"
        ),
        "{shown}"
    );
}

#[test]
fn grants_made_with_a_decision_are_listed_used_and_revoked() {
    let fx = Fixture::new();
    let first = fx.send();
    let id = first.approval.id.as_str();

    // Bad grants are refused before anything is decided.
    let usage = fx.fails(2, &["approvals", "approve", id, "--grant", "forever"]);
    assert!(
        usage.contains("`forever` is not a grant scope; write run, thread, uses:N, for:DURATION (e.g. for:30m) or until:TIME (RFC 3339)"),
        "{usage}"
    );
    let names = [(first.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.fails(1, &["approvals", "approve", id, "--grant", "thread"]),
        &names,
        expect![[r#"
            error: the grant cannot be made: run <RUN>............................... belongs to no thread; grant for the run, a time or a number of uses instead; nothing was decided
        "#]],
    );
    let bad_when = fx.fails(
        1,
        &[
            "approvals",
            "approve",
            id,
            "--grant",
            "uses:2",
            "--grant-when",
            "args.(",
        ],
    );
    assert!(
        bad_when.starts_with("error: the grant cannot be made: ")
            && bad_when.ends_with("; nothing was decided\n"),
        "{bad_when}"
    );
    assert!(
        fx.fails(2, &["approvals", "approve", id, "--grant-tool", "send_*"])
            .contains("--grant <SCOPE>")
    );
    assert_eq!(
        fx.json(&["approvals", "show", id, "--json"])["status"],
        "pending"
    );

    let approved = fx.ok(&["approvals", "approve", id, "--grant", "uses:2"]);
    let grants = fx.json(&["grants", "list", "--json"]);
    let grant = grants[0]["id"].as_str().unwrap().to_owned();
    let names = [
        (first.run.as_str(), "RUN"),
        (id, "APPROVAL"),
        (grant.as_str(), "GRANT"),
    ];
    check(
        &approved,
        &names,
        expect![[r#"
            Approved send_email (approval <APPROVAL>..........................) as alice:
              {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              }
              fingerprint bb8aebc641c4e63a3e4d0c835695349162d9e6ada58e81a1a9d4e5321f1c6dc6
            Granted <GRANT>.............................: later send_email calls run without asking, for 2 calls. `toolgate grants revoke <GRANT>.............................` withdraws it.
            Resume the run with `toolgate runs resume <RUN>...............................`.
        "#]],
    );

    // The next run's call is covered: it does not wait.
    fx.runtime.block_on(async {
        let model: Arc<dyn ChatModel> = Arc::new(seed::model());
        let agent = Agent::new(model, seed::tools()).store(fx.store());
        let outcome = agent.run(SEND).await.unwrap();
        assert!(
            matches!(outcome, RunOutcome::Completed { .. }),
            "{outcome:?}"
        );
    });
    check(
        &fx.ok(&["grants", "list"]),
        &names,
        expect![[r#"
            ID                                    TOOL        WHEN  SCOPE   USES LEFT  BY     CREATED               STATE
            <GRANT>.............................  send_email        2 uses          1  alice  <TIME>..............  live
        "#]],
    );
    check(
        &fx.ok(&["grants", "list", "--json"]),
        &names,
        expect![[r#"
            [
              {
                "id": "<GRANT>.............................",
                "tool": "send_email",
                "when": null,
                "scope": "uses",
                "run_id": null,
                "thread": null,
                "until": null,
                "uses": 2,
                "uses_left": 1,
                "created_by": "alice",
                "created_at": "<TIME>..............",
                "approval_id": "<APPROVAL>..........................",
                "revoked_by": null,
                "revoked_at": null,
                "state": "live"
              }
            ]
        "#]],
    );

    check(
        &fx.ok(&["grants", "revoke", &grant]),
        &names,
        expect![[r#"
            Revoked grant <GRANT>............................. (send_email, 2 uses) as alice; calls it covered will ask again.
        "#]],
    );
    check(
        &fx.ok(&["grants", "revoke", &grant]),
        &names,
        expect![[r#"
            Grant <GRANT>............................. was already revoked by alice at <TIME>..............; nothing to do.
        "#]],
    );
    assert_eq!(fx.ok(&["grants", "list"]), "");
    assert_eq!(fx.ok(&["grants", "list", "--json"]), "[]\n");
    let all = fx.json(&["grants", "list", "--all", "--json"]);
    assert_eq!(all[0]["state"], "revoked");
    assert_eq!(all[0]["revoked_by"], "alice");
    check(
        &fx.fails(1, &["grants", "revoke", "no-such-grant"]),
        &names,
        expect![[r#"
            error: there is no grant `no-such-grant`; `toolgate grants list --all` lists them
        "#]],
    );
    // A revoked grant covers nothing: the next call asks again.
    let third = fx.send();
    assert_eq!(third.approval.status.as_str(), "pending");

    // Listings stop at --limit, newest first.
    fx.ok(&[
        "approvals",
        "approve",
        &third.approval.id,
        "--grant",
        "uses:1",
    ]);
    let all = fx.json(&["grants", "list", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let newest = fx.json(&["grants", "list", "--all", "--limit", "1", "--json"]);
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0], all[0]);
    assert_eq!(newest[0]["state"], "live");
    assert!(
        fx.fails(2, &["grants", "list", "--limit", "0"])
            .contains("invalid value '0' for '--limit <N>'")
    );
}

#[test]
fn runs_are_listed_and_shown_with_their_conversation_and_calls() {
    let fx = Fixture::new();
    let waiting = fx.start(
        None,
        RunOptions::default().principal("tester").thread("inbox-7"),
    );
    let id = waiting.approval.id.as_str();
    let names = [(waiting.run.as_str(), "RUN"), (id, "APPROVAL")];
    check(
        &fx.ok(&["runs", "list"]),
        &names,
        expect![[r#"
            ID                                    STATUS   PROMPT                                                  THREAD   STARTED               UPDATED               EVENTS
            <RUN>...............................  waiting  Send sally@gmail.com an email saying 'What's up homie'  inbox-7  <TIME>..............  <TIME>..............       4
        "#]],
    );
    check(
        &fx.ok(&["runs", "show", &waiting.run]),
        &names,
        expect![[r#"
            Run <RUN>...............................: waiting

              Thread      inbox-7
              Started by  tester
              Started     <TIME>..............
              Updated     <TIME>..............
              Events      4

            Conversation
              human   Send sally@gmail.com an email saying 'What's up homie'
              ai      calls send_email {"recipient":"sally@gmail.com","message":"What's up homie"} (toolu_014XccHFzBiVcc9GV1harV9U)

            Current calls
              toolu_014XccHFzBiVcc9GV1harV9U  send_email {"recipient":"sally@gmail.com","message":"What's up homie"}
                gate      ask (default)
                approval  <APPROVAL>.......................... (pending)
                state     waiting for approval <APPROVAL>..........................

            Approvals
              ID                                    TOOL        STATUS   BY  REQUESTED
              <APPROVAL>..........................  send_email  pending      <TIME>..............

            Next: decide its 1 pending approval (`toolgate approvals list --run <RUN>...............................`), then `toolgate runs resume <RUN>...............................`.
        "#]],
    );
    check(
        &fx.ok(&["runs", "list", "--json"]),
        &names,
        expect![[r#"
            [
              {
                "id": "<RUN>...............................",
                "status": "waiting",
                "thread": "inbox-7",
                "prompt": "Send sally@gmail.com an email saying 'What's up homie'",
                "created_at": "<TIME>..............",
                "updated_at": "<TIME>..............",
                "events": 4
              }
            ]
        "#]],
    );

    fx.ok(&["approvals", "approve", id]);
    let resumed = fx.toolgate(&[
        "runs",
        "resume",
        &waiting.run,
        "--model",
        &fx.script(),
        "--no-stream",
    ]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(fx.ok(&["runs", "list", "--status", "waiting"]), "");
    assert_eq!(
        fx.json(&["runs", "list", "--status", "completed", "--json"])[0]["id"],
        waiting.run.as_str()
    );
    let detail = fx.json(&["runs", "show", &waiting.run, "--json"]);
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["answer"], "I sent your email to sally@gmail.com.");
    assert_eq!(detail["principal"], "tester");
    assert_eq!(detail["calls"], serde_json::json!([]));
    assert_eq!(detail["in_doubt"], serde_json::json!([]));
    assert_eq!(detail["approvals"][0]["status"], "approved");
    let roles: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["human", "ai", "tool", "ai"]);
    let shown = fx.ok(&["runs", "show", &waiting.run]);
    assert!(
        shown.ends_with("Answer\n  I sent your email to sally@gmail.com.\n"),
        "{shown}"
    );
    assert!(
        shown.contains("  tool    toolu_014XccHFzBiVcc9GV1harV9U: Successfully sent email to sally@gmail.com.\n"),
        "{shown}"
    );
    check(
        &fx.fails(1, &["runs", "show", "nope"]),
        &names,
        expect![[r#"
            error: there is no run `nope`; `toolgate runs list --status all` lists them
        "#]],
    );
}

#[test]
fn calls_in_doubt_are_resolved_by_a_person() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let run = waiting.run.as_str();
    let call = waiting.approval.call_id.as_str();
    let names = [(run, "RUN"), (waiting.approval.id.as_str(), "APPROVAL")];

    // Nothing is in doubt yet: the call waits for its approval.
    check(
        &fx.fails(1, &["runs", "resolve", run, call, "--retry"]),
        &names,
        expect![[r#"
            error: call toolu_014XccHFzBiVcc9GV1harV9U (send_email) of run <RUN>............................... is not in doubt, so there is nothing to resolve: it is waiting for approval <APPROVAL>........................... Only a call that started, never finished, and is not safe to run twice needs resolving
        "#]],
    );
    check(
        &fx.fails(1, &["runs", "resolve", run, "toolu_nope", "--retry"]),
        &names,
        expect![[r#"
            error: run <RUN>............................... has no call `toolu_nope` in its current turn; `toolgate runs show <RUN>...............................` lists its calls
        "#]],
    );
    check(
        &fx.fails(1, &["runs", "resolve", "no-such-run", call, "--retry"]),
        &names,
        expect![[r#"
            error: there is no run `no-such-run`; `toolgate runs list --status all` lists them
        "#]],
    );
    assert!(
        fx.fails(2, &["runs", "resolve", run, call])
            .contains("--retry")
    );
    assert!(
        fx.fails(2, &["runs", "resolve", run, call, "--retry", "--fail", "x"])
            .contains("cannot be used with")
    );

    // The call is approved and started, and the process dies before it
    // finishes: send_email is not idempotent, so resuming puts it in doubt.
    fx.ok(&["approvals", "approve", &waiting.approval.id]);
    fx.append(
        run,
        Event::ToolStarted {
            call_id: call.to_owned(),
            args: waiting.approval.args.clone(),
        },
    );
    let resumed = fx.toolgate(&["runs", "resume", run, "--detach", "--no-stream"]);
    assert_eq!(resumed.code, 4, "{}", resumed.stderr);
    let shown = normal(&fx.ok(&["runs", "show", run]), &names);
    assert!(
        shown.contains("    state     in doubt: it started and never finished, and running it twice may not be safe\n"),
        "{shown}"
    );
    assert!(
        shown.contains("Next: say what happened to the call in doubt: `toolgate runs resolve <RUN>............................... toolu_014XccHFzBiVcc9GV1harV9U --retry`"),
        "{shown}"
    );
    assert_eq!(
        fx.json(&["runs", "show", run, "--json"])["in_doubt"],
        serde_json::json!([call])
    );

    check(
        &fx.fails(
            1,
            &["runs", "resolve", run, call, "--done", "Successfully sent"],
        ),
        &names,
        expect![[r#"
            error: --done takes the tool's output as JSON (a text is a JSON string, such as --done '"sent"'); `Successfully sent` is not JSON: expected value at line 1 column 1
        "#]],
    );
    check(
        &fx.ok(&[
            "runs",
            "resolve",
            run,
            call,
            "--done",
            r#""Successfully sent email to sally@gmail.com.""#,
        ]),
        &names,
        expect![[r#"
            Resolved as alice: call toolu_014XccHFzBiVcc9GV1harV9U (send_email) of run <RUN>............................... did run, and returned "Successfully sent email to sally@gmail.com.".
            Resume the run with `toolgate runs resume <RUN>...............................`.
        "#]],
    );
    // Resolved once: the turn is over, and nothing is left to resolve.
    check(
        &fx.fails(1, &["runs", "resolve", run, call, "--fail", "it did not"]),
        &names,
        expect![[r#"
            error: call toolu_014XccHFzBiVcc9GV1harV9U of run <RUN>............................... is over already (it belongs to an earlier turn); nothing to resolve
        "#]],
    );
    let finished = fx.toolgate(&[
        "runs",
        "resume",
        run,
        "--model",
        &fx.script(),
        "--no-stream",
    ]);
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    // The tool itself ran only the once it was started.
    let started = fx
        .events(run)
        .iter()
        .filter(|e| matches!(e, Event::ToolStarted { .. }))
        .count();
    assert_eq!(started, 1);
    let detail = fx.json(&["runs", "show", run, "--json"]);
    assert_eq!(detail["status"], "completed");
    let last_tool = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(
        last_tool["content"],
        "Successfully sent email to sally@gmail.com."
    );
}

#[test]
fn audit_verify_passes_on_a_good_store_and_names_a_changed_entry() {
    let fx = Fixture::new();
    let waiting = fx.send();
    fx.ok(&["approvals", "approve", &waiting.approval.id]);
    check(
        &fx.ok(&["audit", "verify"]),
        &[],
        expect![[r#"
            The audit log verifies: 5 entries, 1 signature.
        "#]],
    );
    let json = fx.json(&["audit", "verify", "--json"]);
    assert_eq!(
        json,
        serde_json::json!({"ok": true, "entries": 5, "signatures": 1})
    );

    // The key, kept elsewhere, verifies too; another store's does not.
    let key = fx.ok(&["audit", "public-key"]);
    assert!(
        regex::Regex::new(r"^[0-9a-f]{64}\n$")
            .unwrap()
            .is_match(&key),
        "{key}"
    );
    assert_eq!(
        fx.json(&["audit", "public-key", "--json"]),
        serde_json::json!({"algorithm": "ed25519", "public_key": key.trim()})
    );
    fx.ok(&["audit", "verify", "--public-key", key.trim()]);
    let other = Fixture::new();
    let other_key = other.ok(&["audit", "public-key"]);
    let forged = fx.toolgate(&["audit", "verify", "--public-key", other_key.trim()]);
    assert_eq!(forged.code, 5, "{}", forged.stderr);
    assert!(
        forged
            .stdout
            .starts_with("The audit log is broken at entry 5 (decision_recorded, run "),
        "{}",
        forged.stdout
    );
    assert!(
        forged
            .stdout
            .contains(": it has a signature that the store's key did not make.\n")
    );
    check(
        &fx.fails(1, &["audit", "verify", "--public-key", "xyz"]),
        &[],
        expect![[r#"
            error: --public-key `xyz` is not a public key: give the 64 hex digits `toolgate audit public-key` prints
        "#]],
    );

    // Someone changes the recipient the model asked for, in the file. The
    // store keeps bodies compressed, but also reads a body stored as plain
    // JSON text: the forger writes one.
    let entries = fx.ok(&["audit", "export", "--json"]);
    let model_turn: Value = entries
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|entry| entry["kind"] == "model_turn")
        .unwrap();
    let body = model_turn["body"].as_str().unwrap();
    assert!(body.contains("sally@gmail.com"), "{body}");
    let forged = body.replace("sally@gmail.com", "eve@evil.test");
    let conn = rusqlite::Connection::open(&fx.db).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET body = ?1 WHERE seq = ?2",
            rusqlite::params![forged, model_turn["seq"].as_i64().unwrap()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let broken = fx.toolgate(&["audit", "verify"]);
    assert_eq!(broken.code, 5, "{}", broken.stderr);
    check(
        &broken.stdout,
        &[(waiting.run.as_str(), "RUN")],
        expect![[r#"
            The audit log is broken at entry 2 (model_turn, run <RUN>...............................): it does not match its hash: it, or the order of the entries before it, was changed.
            The 1 entry before it verify; from entry 2 on, the log cannot be trusted. Restore the store from a backup, or keep it as evidence.
        "#]],
    );
    let json = fx.toolgate(&["audit", "verify", "--json"]);
    assert_eq!(json.code, 5);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["entries"], 1);
    assert_eq!(json["broken"]["seq"], 2);
    assert_eq!(json["broken"]["kind"], "model_turn");
}

#[test]
fn audit_export_prints_every_entry_once() {
    let fx = Fixture::new();
    let waiting = fx.send();
    fx.ok(&[
        "approvals",
        "approve",
        &waiting.approval.id,
        "--grant",
        "run",
    ]);
    let grant = fx.json(&["grants", "list", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fx.ok(&["grants", "revoke", &grant]);

    let lines = fx.ok(&["audit", "export", "--json"]);
    let entries: Vec<Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), 6, "{lines}");
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], index as u64 + 1);
        assert!(entry["hash"].as_str().unwrap().len() == 64);
    }
    assert_eq!(entries[5]["kind"], "grant_revoked");
    assert!(entries[5].get("run_id").is_none());
    assert_eq!(entries[4]["signature"].as_str().unwrap().len(), 128);
    let after = fx.ok(&["audit", "export", "--json", "--after", "4"]);
    assert_eq!(after.lines().count(), 2);

    let table = fx.ok(&["audit", "export"]);
    let hash = regex::Regex::new(r"\b[0-9a-f]{16}\b").unwrap();
    let table = hash.replace_all(&table, "<HASH>..........");
    // Numbers are aligned to the right, so every line starts with blanks,
    // which `expect!` would take for indentation: a margin keeps them.
    let table: String = table.lines().map(|line| format!("|{line}\n")).collect();
    check(
        &table,
        &[
            (waiting.run.as_str(), "RUN"),
            (waiting.approval.id.as_str(), "APPROVAL"),
            (grant.as_str(), "GRANT"),
        ],
        expect![[r#"
            |   SEQ  AT                    RUN                                   KIND                SIGNED  HASH              SUMMARY
            |     1  <TIME>..............  <RUN>...............................  run_started         no      <HASH>..........  asked: Send sally@gmail.com an email saying 'What's up homie'
            |     2  <TIME>..............  <RUN>...............................  model_turn          no      <HASH>..........  calls send_email {"recipient":"sally@gmail.com","message":"What's up homie"}
            |     3  <TIME>..............  <RUN>...............................  gate_verdict        no      <HASH>..........  call toolu_014XccHFzBiVcc9GV1harV9U: ask (default)
            |     4  <TIME>..............  <RUN>...............................  approval_requested  no      <HASH>..........  approval <APPROVAL>.......................... for call toolu_014XccHFzBiVcc9GV1harV9U
            |     5  <TIME>..............  <RUN>...............................  decision_recorded   yes     <HASH>..........  alice approved <APPROVAL>.........................., granting run <RUN>...............................
            |     6  <TIME>..............  -                                     grant_revoked       yes     <HASH>..........  alice revoked grant <GRANT>.............................
        "#]],
    );
}

#[test]
fn on_a_terminal_tables_have_bold_headers_and_ages_and_empty_listings_say_so() {
    let fx = Fixture::new();
    let mut empty = fx.command(&["approvals", "list"], &[]);
    empty.env("TERM", "dumb");
    let (screen, code) = common::run_in_terminal(empty, "", &[]);
    assert_eq!(code, 0);
    assert_eq!(screen, "No pending approvals.\r\n");

    let waiting = fx.send();
    let mut listing = fx.command(&["approvals", "list"], &[("COLUMNS", "100")]);
    listing.env("TERM", "dumb");
    let (screen, code) = common::run_in_terminal(listing, "", &[]);
    assert_eq!(code, 0);
    let screen = normal(
        &screen.replace('\x1b', "<ESC>"),
        &[
            (waiting.run.as_str(), "RUN"),
            (waiting.approval.id.as_str(), "APPROVAL"),
        ],
    );
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].starts_with("<ESC>[1mID "), "{screen}");
    // Fitted to 100 columns: the arguments cut, the optional columns (the
    // rule, who decided, the run) left out, and the time as an age.
    assert!(
        lines[0].ends_with(" STATUS   REQUESTED<ESC>[0m"),
        "{screen}"
    );
    assert!(
        lines[1].ends_with(" {\"recipient\":\"sally@gmail.com…  pending  just now"),
        "{screen}"
    );
    assert!(lines[1].trim_end().chars().count() <= 100, "{screen}");

    let mut plain = fx.command(&["approvals", "list"], &[("NO_COLOR", "1")]);
    plain.env("TERM", "dumb");
    let (screen, _) = common::run_in_terminal(plain, "", &[]);
    assert!(screen.starts_with("ID "), "{screen}");
    assert!(!screen.contains('\x1b'), "{screen}");
}

#[test]
fn listings_are_newest_first_and_limited() {
    let fx = Fixture::new();
    let older = fx.send();
    let newer = fx.send();
    let approvals = fx.json(&["approvals", "list", "--json"]);
    let ids: Vec<&str> = approvals
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [newer.approval.id.as_str(), older.approval.id.as_str()]
    );
    let limited = fx.json(&["approvals", "list", "--limit", "1", "--json"]);
    assert_eq!(limited.as_array().unwrap().len(), 1);
    assert_eq!(limited[0]["id"], newer.approval.id.as_str());
    let runs = fx.json(&["runs", "list", "--limit", "1", "--json"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], newer.run.as_str());
    let older_only = fx.json(&["approvals", "list", "--run", &older.run, "--json"]);
    assert_eq!(older_only.as_array().unwrap().len(), 1);
    assert_eq!(older_only[0]["id"], older.approval.id.as_str());
}

/// The store the tests fill is the one the binary reads: a sanity check of
/// the fixture itself, so that an empty listing above cannot pass by
/// reading another file.
#[test]
fn the_fixture_and_the_binary_share_the_store() {
    let fx = Fixture::new();
    let waiting = fx.send();
    let listed = fx.json(&["approvals", "list", "--json"]);
    assert_eq!(listed[0]["id"], waiting.approval.id.as_str());
    assert!(Path::new(&fx.db).exists());
    let events = fx.events(&waiting.run);
    assert!(
        matches!(events[0], Event::RunStarted { ref messages, .. } if matches!(messages[0], Message::Human { .. }))
    );
}
