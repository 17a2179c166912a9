//! The seed's chain, `model.bind_tools(&tools) | human_approval() | call_tools(&tools)`,
//! with answers from a reader and tools that count their calls.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use toolgate::{
    AiMessage, ChatModel, ChatModelExt, ChatRequest, Error, HumanApproval, ModelError, Runnable,
    Tool, ToolCall, ToolError, ToolSpec, Tools, call_tools, runnable_fn, seed,
};

/// A tool that records how often it ran, and can be told to fail.
struct Counting {
    spec: ToolSpec,
    calls: AtomicUsize,
    fail: bool,
}

impl Counting {
    fn new(name: &str, fail: bool) -> Arc<Self> {
        Arc::new(Counting {
            spec: ToolSpec::new(name, "Counts its calls.", json!({"type": "object"})),
            calls: AtomicUsize::new(0),
            fail,
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Tool for Counting {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _args: Map<String, Value>) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            Err(ToolError::failed(&self.spec.name, "mail server down"))
        } else {
            Ok(json!("done"))
        }
    }
}

/// A model that always answers with the same tool calls.
struct Fixed(Vec<ToolCall>);

#[async_trait]
impl ChatModel for Fixed {
    async fn generate(&self, _request: ChatRequest) -> Result<AiMessage, ModelError> {
        Ok(AiMessage::with_tool_calls(self.0.clone()))
    }
}

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall::new(id, name, json!({}))
}

fn answers(text: &str) -> HumanApproval {
    HumanApproval::with_io(Cursor::new(text.to_owned()), std::io::sink())
}

#[tokio::test]
async fn the_seed_runs_as_in_the_how_to() {
    let tools = seed::tools();
    let chain = seed::model().bind_tools(&tools) | answers("yes\nno\n") | call_tools(&tools);
    let outputs = chain.invoke(seed::PROMPTS[0]).await.unwrap();
    assert_eq!(
        toolgate::pyjson::to_string(&outputs),
        r#"[{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "output": 10}]"#
    );
    let error = chain.invoke(seed::PROMPTS[1]).await.unwrap_err();
    let Error::NotApproved(not_approved) = error else {
        panic!("expected NotApproved, got {error:?}")
    };
    assert_eq!(not_approved.answer.as_deref(), Some("no"));
    assert_eq!(not_approved.calls[0].id, "toolu_014XccHFzBiVcc9GV1harV9U");
}

#[tokio::test]
async fn refused_calls_never_run() {
    for answer in ["no\n", "nope\n", "", "yes please\n", "\n"] {
        let send = Counting::new("send", false);
        let tools = Tools::new([send.clone() as Arc<dyn Tool>]).unwrap();
        let chain = Fixed(vec![call("1", "send"), call("2", "send")]).bind_tools(&tools)
            | answers(answer)
            | call_tools(&tools);
        let error = chain.invoke("send it").await.unwrap_err();
        assert!(
            matches!(error, Error::NotApproved(_)),
            "{answer:?}: {error:?}"
        );
        assert_eq!(send.calls(), 0, "{answer:?} ran the tool");
    }
}

#[tokio::test]
async fn a_bad_call_in_the_list_runs_nothing() {
    let send = Counting::new("send", false);
    let tools = Tools::new([send.clone() as Arc<dyn Tool>]).unwrap();
    let model = Fixed(vec![call("1", "send"), call("2", "delete_everything")]);
    let chain = model.bind_tools(&tools) | answers("y\n") | call_tools(&tools);
    let error = chain.invoke("go").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown tool `delete_everything`; the available tools are: send"
    );
    assert_eq!(send.calls(), 0);
}

#[tokio::test]
async fn a_failing_tool_stops_the_list_and_says_what_ran() {
    let first = Counting::new("first", false);
    let broken = Counting::new("broken", true);
    let last = Counting::new("last", false);
    let tools = Tools::new([first.clone() as Arc<dyn Tool>, broken.clone(), last.clone()]).unwrap();
    let model = Fixed(vec![
        call("a", "first"),
        call("b", "broken"),
        call("c", "last"),
    ]);
    let chain = model.bind_tools(&tools) | answers("y\n") | call_tools(&tools);
    let error = chain.invoke("go").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "tool call 2 of 3 (`broken`, id `b`) failed after 1 ran: tool `broken` failed: mail server down"
    );
    let Error::CallTools(details) = error else {
        panic!()
    };
    assert_eq!(details.completed.len(), 1);
    assert_eq!(details.completed[0].id, "a");
    assert_eq!((first.calls(), broken.calls(), last.calls()), (1, 1, 0));
}

#[tokio::test]
async fn custom_steps_join_the_chain() {
    let tools = seed::tools();
    let only_reads = runnable_fn(|message: AiMessage| async move {
        if message.tool_calls.iter().any(|c| c.name != "count_emails") {
            return Err(Error::other("only count_emails may run unattended"));
        }
        Ok(message)
    });
    let chain = seed::model().bind_tools(&tools) | only_reads | call_tools(&tools);
    assert_eq!(chain.invoke(seed::PROMPTS[0]).await.unwrap()[0].output, 10);
    let error = chain.invoke(seed::PROMPTS[1]).await.unwrap_err();
    assert_eq!(error.to_string(), "only count_emails may run unattended");
}

#[tokio::test]
async fn a_model_that_calls_an_unbound_tool_is_stopped_before_approval() {
    // The seed's script calls `send_email`; bind only `count_emails`.
    let tools = toolgate::tools![seed::CountEmails].unwrap();
    let chain = seed::model().bind_tools(&tools) | answers("") | call_tools(&tools);
    let error = chain.invoke(seed::PROMPTS[1]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model called tool `send_email`, which is not bound; the bound tools are: count_emails"
    );
}
