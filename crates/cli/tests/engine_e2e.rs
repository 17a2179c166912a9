//! `toolgate run` over the durable engine, end to end with the built
//! binary, the seed's recorded conversations and a real store file: detach
//! and resume in another process, edit in $EDITOR, approve for the rest of
//! a run, two processes racing on one approval, and a bad policy file.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;

const SEND: &str = "Send sally@gmail.com an email saying 'What's up homie'";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("toolgate.db")
    }

    /// `toolgate` with this store, the seed's script as the model, and
    /// nothing else from the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.command_on(self.db().as_os_str());
        command.args(args);
        command
    }

    /// `toolgate --db DB`, with the environment of [`Env::command`].
    fn command_on(&self, db: &std::ffi::OsStr) -> Command {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../toolgate/seed/script.json");
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOOLGATE_USER", "alice")
            .env("TOOLGATE_MODEL", format!("scripted:{script}"))
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(db);
        command
    }

    fn run(&self, args: &[&str], input: &str) -> Output {
        run_with(self.command(args), input)
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args, "");
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

fn run_with(command: Command, input: &str) -> Output {
    common::run_piped(command, input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The run id in `toolgate runs resume RUN` of a message.
fn run_id_in(message: &str) -> String {
    let start = message.find("toolgate runs resume ").unwrap() + "toolgate runs resume ".len();
    message[start..]
        .split(|c: char| c == '`' || c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_detached_run_is_approved_and_resumed_by_other_processes() {
    let env = Env::new();
    let output = env.run(&["run", "--detach", SEND], "");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("toolgate: send_email waits for approval "),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "");
    let run_id = run_id_in(&stderr);

    let pending = env.json(&["approvals", "list", "--json"]);
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["tool"], "send_email");
    assert_eq!(pending[0]["run_id"], run_id.as_str());
    let id = pending[0]["id"].as_str().unwrap();

    let approved = env.run(&["approvals", "approve", id], "");
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );

    let resumed = env.run(&["runs", "resume", &run_id], "");
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(
        text(&resumed.stdout),
        "I sent your email to sally@gmail.com.\n"
    );

    let verify = env.run(&["audit", "verify"], "");
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
}

#[test]
fn an_edit_in_the_editor_runs_the_edited_arguments() {
    let env = Env::new();
    let mut command = env.command(&["run", SEND]);
    // The "editor" changes the recipient in the file it is given.
    command.env("EDITOR", "sed -i s/gmail.com/example.com/");
    let output = run_with(command, "e\n");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(r#"toolgate: send_email runs with your arguments: {"recipient":"sally@example.com","message":"What's up homie"}"#),
        "{stderr}"
    );
    let all = env.json(&["approvals", "list", "--status", "all", "--json"]);
    assert_eq!(all[0]["status"], "edited");
    assert_eq!(all[0]["args"]["recipient"], "sally@example.com");
    assert_eq!(all[0]["decided_by"], "alice");
}

#[test]
fn an_editor_that_leaves_the_arguments_asks_again() {
    let env = Env::new();
    let mut command = env.command(&["run", SEND]);
    command.env("EDITOR", "true");
    let output = run_with(command, "e\nn\nnot today\n");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("The arguments were not changed.\n"),
        "{stdout}"
    );
    let all = env.json(&["approvals", "list", "--status", "all", "--json"]);
    assert_eq!(all[0]["status"], "rejected");
}

#[test]
fn approving_for_the_run_makes_a_grant_scoped_to_it() {
    let env = Env::new();
    let output = env.run(&["run", SEND], "r\n");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("toolgate: approved; send_email runs without asking for the rest of run "),
        "{stderr}"
    );
    let grants = env.json(&["grants", "list", "--json"]);
    let grants = grants.as_array().unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["tool"], "send_email");
}

#[test]
fn the_end_of_input_at_the_question_is_a_no() {
    let env = Env::new();
    let output = env.run(&["run", SEND], "");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).lines().last(),
        Some("The email to sally@gmail.com was not sent: sending it was not approved.")
    );
    assert!(
        text(&output.stderr).contains("toolgate: send_email will not run; the model is told\n"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn of_two_processes_deciding_one_approval_exactly_one_wins() {
    for _ in 0..4 {
        let env = Env::new();
        let output = env.run(&["run", "--detach", SEND], "");
        assert_eq!(output.status.code(), Some(4));
        let pending = env.json(&["approvals", "list", "--json"]);
        let id = pending[0]["id"].as_str().unwrap().to_owned();
        let spawn = |args: &[&str]| {
            env.command(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let approve = spawn(&["approvals", "approve", &id]);
        let reject = spawn(&["approvals", "reject", &id, "--message", "no"]);
        let outputs = [
            approve.wait_with_output().unwrap(),
            reject.wait_with_output().unwrap(),
        ];
        let winners = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            winners,
            1,
            "{:?}",
            outputs.iter().map(|o| text(&o.stderr)).collect::<Vec<_>>()
        );
        let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
        assert!(
            text(&loser.stderr).contains("already"),
            "{}",
            text(&loser.stderr)
        );
        let all = env.json(&["approvals", "show", &id, "--json"]);
        assert_eq!(all["decisions"].as_array().unwrap().len(), 1, "{all}");
    }
}

#[test]
fn a_bad_policy_file_is_refused_with_its_place_and_nothing_runs() {
    let env = Env::new();
    let config = env.dir.path().join("toolgate.toml");
    std::fs::write(
        &config,
        "[[policy.rules]]\ntool = \"send_email\"\naction = \"maybe\"\n",
    )
    .unwrap();
    // Found in the current directory, without --config.
    let output = env.run(&["run", SEND], "y\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: toolgate.toml:3:10: "),
        "{stderr}"
    );
    assert!(stderr.contains("allow, deny or ask"), "{stderr}");
    // Refused before anything was stored.
    assert!(!env.db().exists());
    let missing = env.run(&["--config", "nowhere.toml", "run", SEND], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).starts_with("error: cannot read the configuration nowhere.toml: "),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn management_commands_refuse_a_store_that_does_not_exist() {
    let env = Env::new();
    let output = env.run(&["approvals", "list"], "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: there is no store at {}: nothing has run with it yet (check --db or TOOLGATE_DATABASE_URL; `toolgate run` creates it)\n",
            env.db().display()
        )
    );
    assert!(!env.db().exists(), "nothing was created");
}

#[test]
fn a_run_on_postgresql_is_approved_and_resumed_by_other_processes() {
    let env = Env::new();
    let database = common::PgDatabase::create();
    let url = database.url();
    let toolgate = |args: &[&str]| {
        let mut command = env.command_on(url.as_ref());
        command.args(args);
        command
    };
    let output = run_with(toolgate(&["run", "--detach", SEND]), "");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let run_id = run_id_in(&stderr);
    let listed = run_with(toolgate(&["approvals", "list", "--json"]), "");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let pending: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(pending[0]["tool"], "send_email");
    let id = pending[0]["id"].as_str().unwrap();
    let approved = run_with(toolgate(&["approvals", "approve", id]), "");
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        text(&approved.stderr)
    );
    let resumed = run_with(toolgate(&["runs", "resume", &run_id]), "");
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(
        text(&resumed.stdout),
        "I sent your email to sally@gmail.com.\n"
    );
    let verify = run_with(toolgate(&["audit", "verify"]), "");
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    // No SQLite file was made on the side.
    assert!(!env.db().exists());
}

#[test]
fn an_unreachable_postgresql_store_is_a_clear_error() {
    let env = Env::new();
    let mut command = env.command_on("postgres://toolgate:secret@127.0.0.1:1/nowhere".as_ref());
    command.args(["approvals", "list"]);
    let output = run_with(command, "");
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot open the PostgreSQL store: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password never shows: {stderr}"
    );
}

#[test]
fn a_call_that_policy_denies_is_reported_and_never_asked_about() {
    let env = Env::new();
    std::fs::write(
        env.dir.path().join("toolgate.toml"),
        "[[policy.rules]]\ntool = \"send_*\"\naction = \"deny\"\nreason = \"no mail today\"\n",
    )
    .unwrap();
    let output = env.run(&["run", SEND], "y\n");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stderr),
        "toolgate: call toolu_014XccHFzBiVcc9GV1harV9U will not run: policy (rule 1) denies it: no mail today; the model is told\n"
    );
    let stdout = text(&output.stdout);
    assert!(!stdout.contains(">>>"), "nobody is asked: {stdout}");
    assert_eq!(
        stdout,
        "The email to sally@gmail.com was not sent: sending it was not approved.\n"
    );
}
