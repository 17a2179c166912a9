//! `human_approval`: the seed's terminal approval step.

use std::io::{self, BufRead, Write};
use std::sync::{Arc, Mutex};

use toolgate_core::seed::{approval_prompt, is_approval};
use toolgate_core::{AiMessage, Error, NotApproved, Result, Runnable};

/// The seed's approval step; see [`human_approval`].
#[derive(Clone)]
pub struct HumanApproval {
    io: Arc<Mutex<Io>>,
}

struct Io {
    input: Input,
    output: Box<dyn Write + Send>,
    echo: bool,
}

enum Input {
    Stdin,
    Reader(Box<dyn BufRead + Send>),
}

impl Input {
    fn read_line(&mut self, line: &mut String) -> io::Result<usize> {
        match self {
            // `Stdin` keeps one buffer for the whole process, so answers
            // piped in several lines at once reach each prompt in turn.
            Input::Stdin => io::stdin().read_line(line),
            Input::Reader(reader) => reader.read_line(line),
        }
    }
}

impl std::fmt::Debug for HumanApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanApproval").finish_non_exhaustive()
    }
}

/// Asks a person, on standard input and output, to approve a model's tool
/// calls before they run: the how-to's `human_approval`, byte for byte.
///
/// It prints every call as indented JSON and asks; `y` or `yes` in any case
/// (white space around it ignored) passes the model's message on unchanged.
/// Any other answer, or the end of input, stops the chain with
/// [`NotApproved`], and no tool runs. A message without tool calls passes
/// without a question: there is nothing to approve.
///
/// Reading the answer blocks the calling thread, as the seed's `input()`
/// does; this step is meant for terminals and notebooks-style programs. The
/// engine's approvers are the production path.
pub fn human_approval() -> HumanApproval {
    HumanApproval::from_io(Input::Stdin, Box::new(io::stdout()))
}

impl HumanApproval {
    /// The same step reading answers from `input` and writing prompts to
    /// `output`.
    pub fn with_io(
        input: impl BufRead + Send + 'static,
        output: impl Write + Send + 'static,
    ) -> Self {
        HumanApproval::from_io(Input::Reader(Box::new(input)), Box::new(output))
    }

    fn from_io(input: Input, output: Box<dyn Write + Send>) -> Self {
        HumanApproval {
            io: Arc::new(Mutex::new(Io {
                input,
                output,
                echo: false,
            })),
        }
    }

    /// Writes each answer after the prompt, as the how-to's transcript shows
    /// it (` >>> yes`). Useful when the input is a pipe or a file, which no
    /// terminal echoes, so that the output still reads as a conversation.
    pub fn echo_answers(self, echo: bool) -> Self {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).echo = echo;
        self
    }

    fn ask(&self, message: &AiMessage) -> Result<()> {
        let mut io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let io = &mut *io;
        let prompt = approval_prompt(&message.tool_calls);
        let write_error =
            |e: io::Error| Error::other(format!("could not show the approval prompt: {e}"));
        io.output
            .write_all(prompt.as_bytes())
            .map_err(write_error)?;
        io.output.flush().map_err(write_error)?;
        let mut line = String::new();
        let read = io
            .input
            .read_line(&mut line)
            .map_err(|e| Error::other(format!("could not read the approval answer: {e}")))?;
        let answer = (read > 0).then(|| line.trim_end_matches(['\n', '\r']).to_owned());
        if io.echo {
            match answer.as_deref() {
                Some(answer) => writeln!(io.output, " {answer}"),
                None => writeln!(io.output),
            }
            .map_err(write_error)?;
            io.output.flush().map_err(write_error)?;
        }
        match answer {
            Some(answer) if is_approval(&answer) => Ok(()),
            answer => Err(NotApproved {
                calls: message.tool_calls.clone(),
                answer,
            }
            .into()),
        }
    }
}

impl Runnable for HumanApproval {
    type Input = AiMessage;
    type Output = AiMessage;

    async fn invoke(&self, input: impl Into<AiMessage> + Send) -> Result<AiMessage> {
        let message = input.into();
        if !message.tool_calls.is_empty() {
            self.ask(&message)?;
        }
        Ok(message)
    }
}

toolgate_core::impl_pipe_operator!(HumanApproval);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Cursor;
    use toolgate_core::ToolCall;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn message() -> AiMessage {
        AiMessage::with_tool_calls([ToolCall::new(
            "toolu_1",
            "count_emails",
            json!({"last_n_days": 5}),
        )])
    }

    fn ask(input: &str, echo: bool) -> (Result<AiMessage>, String) {
        let output = Shared::default();
        let step = HumanApproval::with_io(Cursor::new(input.to_owned()), output.clone())
            .echo_answers(echo);
        let result = block_on(step.invoke(message()));
        (result, output.text())
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn yes_passes_the_message_on() {
        let (result, output) = ask("yes\n", false);
        assert_eq!(result.unwrap(), message());
        assert!(
            output.ends_with("will be treated as a no.\n >>>"),
            "{output:?}"
        );
    }

    #[test]
    fn other_answers_and_end_of_input_are_not_approved() {
        for (input, answer) in [
            ("no\n", Some("no")),
            ("nope\r\n", Some("nope")),
            ("", None),
            ("\n", Some("")),
        ] {
            let (result, _) = ask(input, false);
            match result {
                Err(Error::NotApproved(not_approved)) => {
                    assert_eq!(not_approved.answer.as_deref(), answer);
                    assert_eq!(not_approved.calls, message().tool_calls);
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn echo_writes_the_answer_after_the_prompt() {
        let (_, output) = ask(" Y \n", true);
        assert!(output.ends_with(" >>>  Y \n"), "{output:?}");
        let (_, output) = ask("", true);
        assert!(output.ends_with(" >>>\n"), "{output:?}");
    }

    #[test]
    fn messages_without_tool_calls_pass_without_a_question() {
        let output = Shared::default();
        let step = HumanApproval::with_io(Cursor::new(String::new()), output.clone());
        let text = AiMessage::text("You got 10 emails.");
        assert_eq!(block_on(step.invoke(text.clone())).unwrap(), text);
        assert_eq!(output.text(), "");
    }

    #[test]
    fn read_errors_are_reported_and_nothing_is_approved() {
        struct Broken;
        impl io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("terminal went away"))
            }
        }
        let step = HumanApproval::with_io(io::BufReader::new(Broken), io::sink());
        let error = block_on(step.invoke(message())).unwrap_err();
        assert_eq!(
            error.to_string(),
            "could not read the approval answer: terminal went away"
        );
    }
}
