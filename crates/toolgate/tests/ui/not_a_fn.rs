/// Not a function.
#[toolgate::tool]
struct Counter;

fn main() {}
