//! What the CLI's end-to-end tests share: the built binary driven through a
//! pseudo-terminal, as a person at a terminal would drive it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use std::time::Duration;

use expectrl::{ControlCode, Eof, Session, WaitStatus};

/// The last line of the seed's approval prompt, as a terminal shows it.
#[allow(dead_code)] // Not every test binary asks the seed's question.
pub(crate) const PROMPT_END: &str =
    "Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.\r\n >>>";

/// One answer typed at a prompt.
#[allow(dead_code)] // Not every test binary uses every answer.
pub(crate) enum Answer {
    /// A line, ended with Enter.
    Line(&'static str),
    /// Ctrl-D: the end of input.
    EndOfInput,
}

/// Runs `command` in a terminal and answers each prompt that ends with
/// `prompt_end` in turn; returns everything the terminal showed (with
/// `\r\n` line ends, echoed answers included) and the exit code.
#[allow(dead_code)] // Not every test binary uses a terminal.
pub(crate) fn run_in_terminal(
    command: Command,
    prompt_end: &str,
    answers: &[Answer],
) -> (String, i32) {
    let mut session = Session::spawn(command).expect("toolgate starts in a terminal");
    // The pty starts with echo off; a person's terminal shows what they type.
    session
        .get_process_mut()
        .set_echo(true, None)
        .expect("the terminal echoes");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    let mut screen = String::new();
    for answer in answers {
        let shown = session
            .expect(prompt_end)
            .unwrap_or_else(|error| panic!("no prompt ({error}); the screen so far:\n{screen}"));
        screen.push_str(&String::from_utf8_lossy(shown.before()));
        screen.push_str(prompt_end);
        match answer {
            Answer::Line(text) => session.send_line(text).unwrap(),
            Answer::EndOfInput => session.send(ControlCode::EndOfTransmission).unwrap(),
        }
    }
    // `Eof` matches all the output that is left: it is the match, not what
    // comes before it.
    let rest = session.expect(Eof).unwrap();
    screen.push_str(&String::from_utf8_lossy(rest.before()));
    for part in rest.matches() {
        screen.push_str(&String::from_utf8_lossy(part));
    }
    let code = match session.get_process().wait().unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("toolgate did not exit normally: {other:?}\n{screen}"),
    };
    (screen, code)
}

/// Runs `command` with `input` on its standard input, as a pipe.
#[allow(dead_code)] // Not every test binary pipes.
pub(crate) fn run_piped(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("toolgate starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[allow(dead_code)] // Not every test binary uses PostgreSQL.
/// A PostgreSQL database of this test's own on the local server (or the one
/// `TOOLGATE_TEST_POSTGRES` names), dropped at the end.
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
}

#[allow(dead_code)]
impl PgDatabase {
    pub(crate) fn create() -> PgDatabase {
        let admin_url = std::env::var("TOOLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!(
            "toolgate_test_cli_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        pg_admin(&admin_url, &format!("CREATE DATABASE {name}"));
        PgDatabase { admin_url, name }
    }

    pub(crate) fn url(&self) -> String {
        let (server, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{server}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        pg_admin(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[allow(dead_code)]
fn pg_admin(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot reach the PostgreSQL server for the tests at {url} ({error}); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
                )
            });
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = connection.await;
    });
}

/// A `toolgate serve` (or any server of toolgate's) on a loopback port.
#[allow(dead_code)] // Not every test binary serves.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `http://ADDR`.
    pub(crate) base: String,
    pub(crate) stderr: BufReader<std::process::ChildStderr>,
}

#[allow(dead_code)]
impl Server {
    /// Starts `command`, a server told to listen on `listen`; waits until
    /// its first line on stderr says it listens there.
    pub(crate) fn start(mut command: Command, listen: &str) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains(&format!("http://{listen}")), "{line}");
        Server {
            child,
            base: format!("http://{listen}"),
            stderr,
        }
    }

    /// SIGTERM, then the exit status and what it printed after starting.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to a server, as `token`; the status and the JSON body (or
/// the text, as a string).
#[allow(dead_code)] // Not every test binary serves.
pub(crate) fn http(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}
