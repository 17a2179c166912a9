//! What the engine's tests share: tools that count their runs, a scripted
//! model that records what it was asked, and a fresh SQLite store.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use toolgate_core::store::Store;
use toolgate_core::{
    AiMessage, ChatModel, ChatRequest, Message, ModelError, Tool, ToolError, ToolHints, ToolSpec,
    Tools,
};
use toolgate_engine::Clock;
use toolgate_models::scripted::ScriptedModel;
use toolgate_store::SqliteStore;

/// A tool that counts its runs and echoes its arguments.
pub(crate) struct Counting {
    spec: ToolSpec,
    pub(crate) runs: Arc<AtomicUsize>,
    pub(crate) last_args: Arc<Mutex<Option<Map<String, Value>>>>,
}

impl Counting {
    pub(crate) fn new(name: &str, hints: ToolHints) -> Counting {
        Counting {
            spec: ToolSpec::new(
                name,
                format!("The {name} tool."),
                json!({
                    "type": "object",
                    "properties": {"recipient": {"type": "string"}, "n": {"type": "integer"}},
                    "additionalProperties": false
                }),
            )
            .hints(hints),
            runs: Arc::default(),
            last_args: Arc::default(),
        }
    }
}

#[async_trait]
impl Tool for Counting {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Map<String, Value>) -> Result<Value, ToolError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        *self.last_args.lock().unwrap() = Some(args.clone());
        Ok(json!(format!("{} ran", self.spec.name)))
    }
}

pub(crate) fn read_only() -> ToolHints {
    ToolHints {
        read_only: Some(true),
        ..ToolHints::default()
    }
}

pub(crate) fn destructive() -> ToolHints {
    ToolHints {
        destructive: Some(true),
        ..ToolHints::default()
    }
}

pub(crate) fn idempotent_write() -> ToolHints {
    ToolHints {
        destructive: Some(true),
        idempotent: Some(true),
        ..ToolHints::default()
    }
}

/// The tools `lookup` (read-only), `send` (destructive) and `sync`
/// (destructive, idempotent), with their run counters.
pub(crate) struct Kit {
    pub(crate) tools: Tools,
    pub(crate) lookup: Arc<AtomicUsize>,
    pub(crate) send: Arc<AtomicUsize>,
    pub(crate) sync: Arc<AtomicUsize>,
    pub(crate) send_args: Arc<Mutex<Option<Map<String, Value>>>>,
}

pub(crate) fn kit() -> Kit {
    let lookup = Counting::new("lookup", read_only());
    let send = Counting::new("send", destructive());
    let sync = Counting::new("sync", idempotent_write());
    let kit_counters = (
        Arc::clone(&lookup.runs),
        Arc::clone(&send.runs),
        Arc::clone(&sync.runs),
        Arc::clone(&send.last_args),
    );
    let tools = Tools::new([
        Arc::new(lookup) as Arc<dyn Tool>,
        Arc::new(send) as Arc<dyn Tool>,
        Arc::new(sync) as Arc<dyn Tool>,
    ])
    .unwrap();
    Kit {
        tools,
        lookup: kit_counters.0,
        send: kit_counters.1,
        sync: kit_counters.2,
        send_args: kit_counters.3,
    }
}

/// A scripted model that remembers the last conversation it was given.
#[derive(Clone)]
pub(crate) struct Recording {
    inner: ScriptedModel,
    pub(crate) last: Arc<Mutex<Vec<Message>>>,
}

#[async_trait]
impl ChatModel for Recording {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        *self.last.lock().unwrap() = request.messages.clone();
        self.inner.generate(request).await
    }
}

impl Recording {
    /// The last tool result the model saw.
    pub(crate) fn last_tool_result(&self) -> (String, bool) {
        self.last
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::Tool(t) => Some((t.content.clone(), t.is_error)),
                _ => None,
            })
            .expect("the model saw a tool result")
    }
}

/// A model whose script has, for `prompt`, one turn calling `calls`
/// (`(id, tool, args)`), then an answer after results that succeed, and
/// another after results that failed.
pub(crate) fn model(prompt: &str, calls: &[(&str, &str, Value)]) -> Recording {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| json!({"name": name, "args": args, "id": id}))
        .collect();
    let results = |is_error: bool| -> Vec<Value> {
        calls
            .iter()
            .map(|(id, _, _)| json!({"role": "tool", "tool_call_id": id, "content": "", "is_error": is_error}))
            .collect()
    };
    let conversation = |is_error: bool, answer: &str| {
        let mut messages = vec![
            json!({"role": "human", "content": prompt}),
            json!({"role": "ai", "content": "", "tool_calls": tool_calls}),
        ];
        messages.extend(results(is_error));
        messages.push(json!({"role": "ai", "content": answer}));
        json!({"messages": messages})
    };
    let script = json!({"conversations": [
        conversation(false, "done"),
        conversation(true, "could not do it"),
    ]});
    Recording {
        inner: ScriptedModel::from_json(&script.to_string(), "the test script").unwrap(),
        last: Arc::default(),
    }
}

/// A fresh SQLite store in a temporary folder (kept alive by the guard).
pub(crate) fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
    (Arc::new(store), dir)
}

/// A clock the test moves by hand.
pub(crate) fn manual_clock(start: i64) -> (Clock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start));
    let read = Arc::clone(&now);
    (Arc::new(move || read.load(Ordering::SeqCst)), now)
}
