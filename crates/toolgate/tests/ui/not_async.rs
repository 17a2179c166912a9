/// Counts.
#[toolgate::tool]
fn count(n: i64) -> i64 {
    n
}

fn main() {}
