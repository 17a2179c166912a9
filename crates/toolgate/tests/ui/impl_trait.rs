/// Greets.
#[toolgate::tool]
async fn greet(name: impl Into<String>) -> String {
    name.into()
}

fn main() {}
