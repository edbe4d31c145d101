//! The node's one Pub/Sub connection: subscribed to each channel the node
//! follows, it feeds notifications to the local channels; after every
//! (re)connection it asks Redis for each channel's head, so that what was
//! published while it was down is read from the stream, not lost. It is
//! also subscribed to the node's probe channel and reports the probes back
//! (see the `health` module).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt as _;
use push_core::{Backoff, ChannelName, ContentKind, Epoch};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::Inner;
use crate::connection::{Connector, FIRST_DELAY};
use crate::entries::{Notification, notification};
use crate::local::LocalChannel;

/// What the hub asks of the Pub/Sub task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A channel got its first local subscriber.
    Follow(Arc<LocalChannel>),
    /// A channel lost its last local subscriber.
    Unfollow(ChannelName),
    /// The connection takes no messages though Redis works (the probes do
    /// not come back): connect again.
    Reconnect,
}
/// Attempts to learn a channel's head before leaving it to later news.
const LEARN_ATTEMPTS: u32 = 8;

/// Runs until the hub is gone.
pub(crate) async fn run(
    connector: Arc<Connector>,
    hub: Weak<Inner>,
    mut control: UnboundedReceiver<Control>,
) {
    let Some(max_delay) = hub.upgrade().map(|inner| inner.config.max_reconnect_delay) else {
        return;
    };
    let mut backoff = Backoff::new(FIRST_DELAY, max_delay);
    let mut moves = connector.moves();
    loop {
        let (pubsub, address) = match connector.pubsub().await {
            Ok(connected) => connected,
            Err(reason) => {
                let delay = backoff.next_delay();
                tracing::warn!(%reason, ?delay, "Redis Pub/Sub connection failed; retrying");
                // News of the master cuts the wait short.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = moves.next() => {}
                }
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // The probe channel, everything followed now, then what each
        // channel's head is.
        let Some(inner) = hub.upgrade() else { return };
        let probe = inner.probe_channel();
        let followed = inner.followed();
        let mut subscribed = sink.subscribe(&probe).await.is_ok();
        for local in &followed {
            if !subscribed {
                break;
            }
            subscribed = sink
                .subscribe(inner.notify_channel(&local.name))
                .await
                .is_ok();
        }
        if !subscribed {
            drop(inner);
            connector.forget(&address);
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        for local in &followed {
            learn(&inner, local).await;
        }
        drop(inner);
        backoff.reset();
        tracing::debug!(channels = followed.len(), "Redis Pub/Sub connected");
        // Hold no channel past its last subscriber (nor its cache).
        drop(followed);
        loop {
            tokio::select! {
                command = control.recv() => {
                    let Some(command) = command else { return };
                    let Some(inner) = hub.upgrade() else { return };
                    let ok = match command {
                        Control::Follow(local) => {
                            let ok = sink.subscribe(inner.notify_channel(&local.name)).await.is_ok();
                            if ok {
                                learn(&inner, &local).await;
                            }
                            ok
                        }
                        // Followed again meanwhile: stay subscribed.
                        Control::Unfollow(name) if inner.local(&name).is_some() => true,
                        Control::Unfollow(name) => {
                            sink.unsubscribe(inner.notify_channel(&name)).await.is_ok()
                        }
                        Control::Reconnect => false,
                    };
                    if !ok {
                        break;
                    }
                }
                () = moves.next() => {
                    // A sentinel named another master: leave this one.
                    if connector.moved_from(&address) {
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(inner) = hub.upgrade() else { return };
                    let channel = message.get_channel_name();
                    if channel == probe {
                        inner.health.probe_back(message.get_payload_bytes());
                    } else {
                        notified(&inner, channel, message.get_payload_bytes());
                    }
                }
            }
        }
        tracing::warn!(%address, "Redis Pub/Sub connection lost or left; reconnecting");
        // Whatever ended it, the next dial asks where the master is.
        connector.forget(&address);
    }
}

/// Asks Redis for `local`'s epoch and head (no messages): subscribers that
/// are behind then read the rest from the stream. Right after a reconnection
/// the command connection may still be reconnecting too: a few retries.
pub(crate) async fn learn(inner: &Inner, local: &LocalChannel) {
    let mut backoff = Backoff::new(FIRST_DELAY, inner.config.max_reconnect_delay);
    for attempt in 1..=LEARN_ATTEMPTS {
        match inner.read_from(&local.name, u64::MAX, 0).await {
            Ok((span, _)) => {
                local.lock().learned(span.epoch, span.head, local.budget());
                return;
            }
            Err(err) if attempt == LEARN_ATTEMPTS => {
                // A later notification or reconnection tells the node instead.
                tracing::warn!(channel = %local.name, %err, "reading a channel's head failed");
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
    local.lock().nudge();
}

/// One notification (see [`notification`]): a stored message, a new epoch,
/// or an ephemeral message.
pub(crate) fn notified(inner: &Inner, notify_channel: &str, payload: &[u8]) {
    let Some(name) = inner.channel_of(notify_channel) else {
        return;
    };
    let Some(local) = inner.local(&name) else {
        return;
    };
    let (epoch, number, time, event, data, kind) = match notification(payload) {
        Notification::Message {
            epoch,
            number,
            time,
            event,
            data,
            kind,
        } => (epoch, number, time, event, data, kind),
        Notification::NewEpoch { epoch, head } => {
            // A new epoch: what the node holds of the old one goes.
            local.lock().learned(epoch, head, local.budget());
            return;
        }
        Notification::Ephemeral {
            time,
            event,
            data,
            kind,
        } => return notified_ephemeral(inner, &local, time, event, (data, kind)),
        Notification::MalformedEphemeral => {
            tracing::warn!(channel = %name, "a malformed ephemeral notification; ignored");
            return;
        }
        Notification::Malformed => {
            tracing::warn!(channel = %name, "a malformed notification; ignored");
            local.lock().nudge();
            return;
        }
    };
    match crate::message(
        &name,
        epoch,
        number,
        event,
        time,
        (Bytes::copy_from_slice(data), kind),
    ) {
        Ok(message) => {
            local.lock().notified(
                epoch,
                Arc::new(message),
                inner.config.node_cache,
                local.budget(),
            );
        }
        Err(err) => {
            tracing::warn!(channel = %name, %err, "a notification that is not a message; ignored");
            local.lock().nudge();
        }
    }
}

/// An ephemeral message: delivered to the node's live subscribers, never
/// stored.
fn notified_ephemeral(
    inner: &Inner,
    local: &LocalChannel,
    time: u64,
    event: &[u8],
    (data, kind): (&[u8], ContentKind),
) {
    match crate::message(
        &local.name,
        Epoch::new(0),
        0,
        event,
        time,
        (Bytes::copy_from_slice(data), kind),
    ) {
        Ok(message) => local
            .lock()
            .notified_ephemeral(message.ephemeral(), inner.config.max_ephemeral_bytes),
        Err(err) => {
            tracing::warn!(channel = %local.name, %err, "an ephemeral notification that is not a message; ignored");
        }
    }
}
