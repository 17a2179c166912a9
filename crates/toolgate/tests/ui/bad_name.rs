/// Counts.
#[toolgate::tool(name = "count emails")]
async fn count(n: i64) -> i64 {
    n
}

fn main() {}
