//! `#[tool]` as users write it: schemas, descriptions, options, argument
//! checking and errors.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgate::{Tool, ToolCall, ToolError, Tools, tool, tools};

/// Looks up the weather.
///
/// Answers in degrees Celsius.
///
/// # Arguments
/// * `city` - the city to look up,
///   in English
/// * `days` - how many days ahead
#[tool(
    name = "weather_lookup",
    read_only,
    idempotent = true,
    destructive = false
)]
async fn weather(city: String, days: Option<u8>) -> Forecast {
    Forecast {
        city,
        days: days.unwrap_or(1),
    }
}

#[derive(Serialize)]
struct Forecast {
    city: String,
    days: u8,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Filter {
    field: String,
    values: Vec<String>,
}

/// Searches with filters.
#[tool]
async fn search(filters: Vec<Filter>, mut limit: u32) -> Result<usize, std::io::Error> {
    limit = limit.min(10);
    if filters.iter().any(|f| f.field == "fail") {
        return Err(std::io::Error::other("the index is offline"));
    }
    Ok(filters
        .iter()
        .map(|f| f.values.len())
        .sum::<usize>()
        .min(limit as usize))
}

/// Does nothing and returns nothing.
#[tool(description = "Pings.")]
async fn ping() {}

/// Takes a raw identifier as a parameter name.
#[tool]
async fn r#match(r#type: String) -> String {
    r#type
}

fn args(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn doc_comments_become_descriptions() {
    let spec = Weather.spec();
    assert_eq!(spec.name, "weather_lookup");
    assert_eq!(
        spec.description,
        "Looks up the weather.\n\nAnswers in degrees Celsius."
    );
    assert_eq!(
        spec.parameters["properties"]["city"]["description"],
        "the city to look up, in English"
    );
    assert_eq!(
        spec.parameters["properties"]["days"]["description"],
        "how many days ahead"
    );
    assert_eq!(spec.parameters["required"], json!(["city"]));
    assert_eq!(spec.parameters["additionalProperties"], json!(false));
    assert_eq!(spec.hints.read_only, Some(true));
    assert_eq!(spec.hints.idempotent, Some(true));
    assert_eq!(spec.hints.destructive, Some(false));
    assert_eq!(Ping.spec().description, "Pings.");
    assert_eq!(Ping.spec().hints, toolgate::ToolHints::default());
}

#[test]
fn nested_types_are_inlined_in_the_schema() {
    let schema = &Search.spec().parameters;
    assert!(schema.get("$defs").is_none(), "{schema:#}");
    assert_eq!(
        schema["properties"]["filters"]["items"]["properties"]["field"]["type"],
        "string"
    );
    assert_eq!(schema["properties"]["limit"]["minimum"], 0);
}

#[tokio::test]
async fn the_function_runs_with_its_typed_arguments() {
    let output = Weather.call(args(json!({"city": "Oslo"}))).await.unwrap();
    assert_eq!(output, json!({"city": "Oslo", "days": 1}));
    let output = Search
        .call(args(
            json!({"filters": [{"field": "a", "values": ["x", "y"]}], "limit": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(output, json!(1));
    assert_eq!(Ping.call(args(json!({}))).await.unwrap(), Value::Null);
    assert_eq!(
        Match.call(args(json!({"type": "t"}))).await.unwrap(),
        json!("t")
    );
    assert_eq!(Match.spec().name, "match");
    // The function itself is still there to call directly.
    assert_eq!(weather("Rome".into(), Some(3)).await.days, 3);
}

#[tokio::test]
async fn errors_returned_by_the_function_name_the_tool() {
    let error = Search
        .call(args(
            json!({"filters": [{"field": "fail", "values": []}], "limit": 1}),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, ToolError::Failed { .. }));
    assert_eq!(
        error.to_string(),
        "tool `search` failed: the index is offline"
    );
}

#[tokio::test]
async fn bad_arguments_never_reach_the_function() {
    let tools = tools![Weather, Search].unwrap();
    let cases = [
        (
            json!({"days": 2}),
            "invalid arguments for tool `weather_lookup`: `city`: is required but missing",
        ),
        (
            json!({"city": 3}),
            "invalid arguments for tool `weather_lookup`: `city`: 3 is not of type \"string\"",
        ),
        (
            json!({"city": "Oslo", "days": 300}),
            "invalid arguments for tool `weather_lookup`: `days`: 300 is greater than the maximum of 255",
        ),
        (
            json!({"city": "Oslo", "country": "NO"}),
            "invalid arguments for tool `weather_lookup`: `country`: is not an argument of this tool",
        ),
    ];
    for (bad, message) in cases {
        let call = ToolCall::new("1", "weather_lookup", bad.clone());
        let error = tools.invoke(&call).await.unwrap_err();
        assert_eq!(error.to_string(), message, "for {bad}");
    }
    let call = ToolCall::new(
        "1",
        "search",
        json!({"filters": [{"field": "a"}], "limit": -1}),
    );
    let error = tools.invoke(&call).await.unwrap_err();
    let ToolError::InvalidArguments { problems, .. } = &error else {
        panic!("{error:?}")
    };
    let arguments: Vec<&str> = problems.iter().map(|p| p.argument.as_str()).collect();
    assert_eq!(arguments, ["filters[0].values", "limit"], "{error}");
}

#[test]
fn tool_values_are_shareable_trait_objects() {
    let tool: Arc<dyn Tool> = Arc::new(Weather);
    let set = Tools::new([tool.clone(), Arc::new(Ping)]).unwrap();
    assert_eq!(set.names(), ["weather_lookup", "ping"]);
    assert!(set.get("ping").is_some());
    assert_eq!(
        format!("{:?}", &*tool),
        "Tool { name: \"weather_lookup\", .. }"
    );
}

#[test]
fn compile_errors_are_clear() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
