/// Counts.
#[toolgate::tool(readonly)]
async fn count(n: i64) -> i64 {
    n
}

fn main() {}
