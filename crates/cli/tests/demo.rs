//! `toolgate demo` driven as a person would: through a pseudo-terminal, and
//! through a pipe.

use std::process::Command;

use expect_test::expect;

mod common;

use common::{Answer, PROMPT_END};

const COUNT_RESULT: &str = r#"[{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "output": 10}]"#;
const SEND_RESULT: &str = r#"[{"name": "send_email", "args": {"recipient": "sally@gmail.com", "message": "What's up homie"}, "id": "toolu_014XccHFzBiVcc9GV1harV9U", "output": "Successfully sent email to sally@gmail.com."}]"#;

/// Runs the demo in a terminal, answering each prompt in turn.
fn run_in_terminal(answers: [Answer; 2]) -> (String, i32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
    command.arg("demo");
    common::run_in_terminal(command, PROMPT_END, &answers)
}

#[test]
fn yes_then_no_in_a_terminal_is_the_how_to() {
    let (screen, code) = run_in_terminal([Answer::Line("YES"), Answer::Line("no")]);
    assert!(
        screen.contains(&format!(" >>>YES\r\n{COUNT_RESULT}\r\n")),
        "{screen}"
    );
    assert!(
        screen.ends_with(
            " >>>no\r\n\r\nTool invocations not approved:\r\n\r\n{\r\n  \"name\": \"send_email\",\r\n  \"args\": {\r\n    \"recipient\": \"sally@gmail.com\",\r\n    \"message\": \"What's up homie\"\r\n  },\r\n  \"id\": \"toolu_014XccHFzBiVcc9GV1harV9U\"\r\n}\r\n"
        ),
        "{screen}"
    );
    assert!(!screen.contains("Successfully sent"), "{screen}");
    assert_eq!(code, 3);
}

#[test]
fn y_with_spaces_approves_both() {
    let (screen, code) = run_in_terminal([Answer::Line(" y "), Answer::Line("Yes")]);
    assert!(screen.contains(COUNT_RESULT), "{screen}");
    assert!(screen.contains(SEND_RESULT), "{screen}");
    assert!(!screen.contains("not approved"), "{screen}");
    assert_eq!(code, 0);
}

#[test]
fn nope_and_end_of_input_are_both_a_no() {
    let (screen, code) = run_in_terminal([Answer::Line("nope"), Answer::EndOfInput]);
    assert_eq!(
        screen.matches("Tool invocations not approved:").count(),
        2,
        "{screen}"
    );
    assert!(!screen.contains("\"output\""), "no tool may run: {screen}");
    assert_eq!(code, 3);
}

fn run_piped(input: &str, args: &[&str]) -> (String, String, i32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
    command.arg("demo").args(args);
    let output = common::run_piped(command, input);
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code().unwrap(),
    )
}

#[test]
fn piped_answers_are_echoed_so_the_transcript_reads_like_the_how_to() {
    let (stdout, stderr, code) = run_piped("yes\nno\n", &[]);
    assert_eq!(stderr, "");
    assert_eq!(code, 3);
    expect![[r#"
        Do you approve of the following tool invocations

        {
          "name": "count_emails",
          "args": {
            "last_n_days": 5
          },
          "id": "toolu_01WbD8XeMoQaRFtsZezfsHor"
        }

        Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.
         >>> yes
        [{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "output": 10}]
        Do you approve of the following tool invocations

        {
          "name": "send_email",
          "args": {
            "recipient": "sally@gmail.com",
            "message": "What's up homie"
          },
          "id": "toolu_014XccHFzBiVcc9GV1harV9U"
        }

        Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.
         >>> no

        Tool invocations not approved:

        {
          "name": "send_email",
          "args": {
            "recipient": "sally@gmail.com",
            "message": "What's up homie"
          },
          "id": "toolu_014XccHFzBiVcc9GV1harV9U"
        }
    "#]]
    .assert_eq(&stdout);
}

#[test]
fn an_empty_pipe_approves_nothing() {
    let (stdout, _, code) = run_piped("", &[]);
    assert_eq!(stdout.matches("Tool invocations not approved:").count(), 2);
    assert!(!stdout.contains("\"output\""));
    assert_eq!(code, 3);
}

#[test]
fn a_bad_model_spec_says_what_to_write() {
    let (stdout, stderr, code) = run_piped("", &["--model", "nonsense:thing"]);
    assert_eq!(stdout, "");
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(
            "error: cannot use the model `nonsense:thing`: unknown model provider `nonsense`"
        ),
        "{stderr}"
    );
}

#[test]
fn a_script_that_does_not_fit_is_reported_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        r#"{"conversations": [{"messages": [{"role": "human", "content": "something else"}, {"role": "ai", "content": "hi"}]}]}"#,
    )
    .unwrap();
    let spec = format!("scripted:{}", script.display());
    let (stdout, stderr, code) = run_piped("", &["--model", &spec]);
    assert_eq!(stdout, "");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("does not fit this conversation"),
        "{stderr}"
    );
    assert!(
        stderr.contains("got a human message \"how many emails did i get in the last 5 days?\""),
        "{stderr}"
    );
}
