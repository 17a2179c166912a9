//! Runs the example as a user would, answering `yes` then `no` on a pipe.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn the_how_to_runs_as_published() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_example-seed-howto"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example builds and starts");
    child.stdin.take().unwrap().write_all(b"yes\nno\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    // The prompts are printed without the answers (a pipe does not echo),
    // so each result follows its prompt on the same line, as in Python.
    let expected = concat!(
        "Do you approve of the following tool invocations\n\n",
        "{\n  \"name\": \"count_emails\",\n  \"args\": {\n    \"last_n_days\": 5\n  },\n  \"id\": \"toolu_01WbD8XeMoQaRFtsZezfsHor\"\n}\n\n",
        "Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.\n >>>",
        "[{\"name\": \"count_emails\", \"args\": {\"last_n_days\": 5}, \"id\": \"toolu_01WbD8XeMoQaRFtsZezfsHor\", \"output\": 10}]\n",
        "Do you approve of the following tool invocations\n\n",
        "{\n  \"name\": \"send_email\",\n  \"args\": {\n    \"recipient\": \"sally@gmail.com\",\n    \"message\": \"What's up homie\"\n  },\n  \"id\": \"toolu_014XccHFzBiVcc9GV1harV9U\"\n}\n\n",
        "Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.\n >>>",
        "\n",
        "Tool invocations not approved:\n\n",
        "{\n  \"name\": \"send_email\",\n  \"args\": {\n    \"recipient\": \"sally@gmail.com\",\n    \"message\": \"What's up homie\"\n  },\n  \"id\": \"toolu_014XccHFzBiVcc9GV1harV9U\"\n}\n",
    );
    assert_eq!(stdout, expected);
}
