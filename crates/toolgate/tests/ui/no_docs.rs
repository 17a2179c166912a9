#[toolgate::tool]
async fn undocumented(n: i64) -> i64 {
    n
}

fn main() {}
