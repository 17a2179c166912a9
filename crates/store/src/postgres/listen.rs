//! `LISTEN toolgate_changes`: one connection per store that hears of every
//! append to the database, from any process, so that waiters wake at once
//! instead of asking the database again and again.
//!
//! Every write that moves the audit log's head also sends
//! `pg_notify('toolgate_changes', SEQ)` in its transaction; PostgreSQL
//! delivers it to every listener when the transaction commits. If the
//! listening connection drops, it is made again (waiters fall back to
//! their timeouts meanwhile, so nothing is missed, only later).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel every toolgate store notifies and listens on.
pub(crate) const CHANNEL: &str = "toolgate_changes";

/// The listening task, and the highest head it has heard of.
pub(crate) struct Listener {
    heard: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening with `config` (the store's own connection
    /// settings).
    pub(crate) fn start(config: tokio_postgres::Config) -> Listener {
        let (sender, heard) = watch::channel(0);
        let task = tokio::spawn(listen(config, sender));
        Listener { heard, task }
    }

    /// Waits until a head past `after` is heard of, or `timeout` passes;
    /// the highest head heard of then.
    pub(crate) async fn wait_past(&self, after: u64, timeout: Duration) -> u64 {
        let mut heard = self.heard.clone();
        let _ = tokio::time::timeout(timeout, heard.wait_for(|seq| *seq > after)).await;
        *heard.borrow()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(config: tokio_postgres::Config, heard: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (messages, mut received) = tokio::sync::mpsc::unbounded_channel();
            // The connection delivers notifications only while it is polled.
            let driver = tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(AsyncMessage::Notification(notification)) => {
                            if messages.send(notification.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                backoff = Duration::from_millis(100);
                while let Some(payload) = received.recv().await {
                    if let Ok(seq) = payload.parse::<u64>() {
                        heard.send_if_modified(|highest| {
                            let newer = seq > *highest;
                            if newer {
                                *highest = seq;
                            }
                            newer
                        });
                    }
                }
            }
            driver.abort();
        }
        if heard.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
