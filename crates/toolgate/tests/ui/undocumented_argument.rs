/// Counts.
///
/// # Arguments
/// * `days` - how many days
#[toolgate::tool]
async fn count(n: i64) -> i64 {
    n
}

fn main() {}
