//! The connection that `LISTEN`s: it turns the notifications other nodes' transactions send on commit
//! into [`Events`]. Notifications sent while it is down are lost, so after it connects again it raises
//! [`Events::missed`], and each consumer also polls, as a safety net.

use super::cluster::CHANNEL;
use super::Tls;
use crate::cluster::Events;
use crate::StoreError;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The wait before connecting again, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The listening task; it stops when this is dropped.
pub(super) struct Listener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Connects and listens (failing if the first connection cannot be made), then keeps listening in
    /// the background, connecting again whenever the connection is lost.
    pub(super) async fn start(
        config: Config,
        tls: Tls,
        events: Events,
    ) -> Result<Self, StoreError> {
        let first = listen(&config, &tls, &events).await?;
        let task = tokio::spawn(async move {
            first.await;
            let mut wait = FIRST_RETRY;
            loop {
                tokio::time::sleep(wait).await;
                match listen(&config, &tls, &events).await {
                    Ok(connection) => {
                        tracing::info!("listening to the database again");
                        wait = FIRST_RETRY;
                        events.missed();
                        connection.await;
                    }
                    Err(e) => {
                        tracing::warn!("cannot listen to the database: {e}");
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
        });
        Ok(Self { task })
    }
}

/// Connects, starts listening, and returns the future that delivers notifications until the connection
/// ends.
async fn listen(
    config: &Config,
    tls: &Tls,
    events: &Events,
) -> Result<futures_util::future::BoxFuture<'static, ()>, StoreError> {
    let events = events.clone();
    let (client, delivered) = match tls {
        Tls::Plain => {
            let (client, connection) = config.connect(NoTls).await?;
            (client, tokio::spawn(deliver(connection, events)))
        }
        Tls::Verified(make) => {
            let (client, connection) = config.connect(make.clone()).await?;
            (client, tokio::spawn(deliver(connection, events)))
        }
    };
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Box::pin(async move {
        let _ = delivered.await;
        // The client lives as long as the connection: dropping it would end the session.
        drop(client);
    }))
}

/// Polls `connection`, raising an event for each notification, until it ends.
async fn deliver<S, T>(mut connection: tokio_postgres::Connection<S, T>, events: Events)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(n)) => match n.payload() {
                "changes" => events.changed(),
                "queue" => events.queued(),
                "logs" => events.logged(),
                other => tracing::debug!(payload = other, "unknown notification"),
            },
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("the database connection for notifications failed: {e}");
                break;
            }
        }
    }
}
