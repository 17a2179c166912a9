//! LangChain's "How to add a human-in-the-loop for tools", line by line.
//!
//! Run with `cargo run -p example-seed-howto` and answer `yes`, then `no`.
//! It runs offline: the model is a scripted model that replays the
//! how-to's recorded conversations. To ask a real model instead, replace
//! `toolgate::seed::model()` with e.g. `toolgate::models::from_spec("openai:gpt-4o-mini")?`.

use toolgate::{ChatModelExt, Error, Runnable, call_tools, human_approval, pyjson, tool, tools};

// @tool
// def count_emails(last_n_days: int) -> int:
/// Dummy function to count number of e-mails. Returns 2 * last_n_days.
#[tool]
async fn count_emails(last_n_days: i64) -> i64 {
    last_n_days * 2
}

// @tool
// def send_email(message: str, recipient: str) -> str:
/// Dummy function for sending an e-mail.
#[tool]
async fn send_email(message: String, recipient: String) -> String {
    let _ = message;
    format!("Successfully sent email to {recipient}.")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let llm = toolgate::seed::model();

    // tools = [count_emails, send_email]
    let tools = tools![CountEmails, SendEmail]?;
    // llm_with_tools = llm.bind_tools(tools)
    let llm_with_tools = llm.bind_tools(&tools);

    // `call_tools` and `human_approval` are the how-to's two functions,
    // shipped by toolgate with the same behaviour and text.

    // chain = llm_with_tools | human_approval | call_tools
    let chain = llm_with_tools | human_approval() | call_tools(&tools);

    // chain.invoke("how many emails did i get in the last 5 days?")
    let outputs = chain
        .invoke("how many emails did i get in the last 5 days?")
        .await?;
    println!("{}", pyjson::to_string(&outputs));

    // try:
    //     chain.invoke("Send sally@gmail.com an email saying 'What's up homie'")
    // except NotApproved as e:
    //     print()
    //     print(e)
    match chain
        .invoke("Send sally@gmail.com an email saying 'What's up homie'")
        .await
    {
        Ok(outputs) => println!("{}", pyjson::to_string(&outputs)),
        Err(Error::NotApproved(e)) => {
            println!();
            println!("{e}");
        }
        Err(other) => return Err(other.into()),
    }
    Ok(())
}
