struct Mailer;

impl Mailer {
    /// Sends.
    #[toolgate::tool]
    async fn send(&self, to: String) -> String {
        to
    }
}

fn main() {}
