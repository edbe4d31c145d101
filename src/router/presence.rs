//! `GET /presence/{channel}`: who is subscribed to a channel now.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use push_core::{Counts, Error, Hub, PresencePage, PresenceSnapshot};
use push_http::{Access, Action, ChannelLocator, Head};
use serde_json::{Map, Value, json};

/// Users listed when a request names no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most users one answer lists.
const MAX_LIMIT: usize = 1_000;

/// Answers `GET /presence/{channel}[?after=USER&limit=N]` with the users
/// present (in name order, a page of them), anonymous connections counted,
/// and every connection by technique, once `access`'s hook allows
/// subscribing to the channel.
pub(super) async fn presence<H: Hub>(hub: &H, head: Head, access: Access) -> Response<Full<Bytes>> {
    if head.method() != Method::GET {
        return push_http::method_not_allowed("GET", "presence answers GET only");
    }
    let asked = head.query().and_then(|query| {
        let channel = ChannelLocator::LastPathSegment.locate(head.uri().path(), &query)?;
        let after = query.get("after")?.map(std::borrow::Cow::into_owned);
        if after
            .as_ref()
            .is_some_and(|after| after.len() > push_core::MAX_USER_LEN)
        {
            return Err(Error::invalid_query("`after` is longer than a user name"));
        }
        let limit = query.count("limit", MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        Ok((channel, PresencePage { after, limit }))
    });
    let (mut channel, page) = match asked {
        Ok(asked) => asked,
        Err(err) => return push_http::error_for(&err),
    };
    let check = access.check(head.parts(), &channel, Action::Subscribe);
    drop(head);
    match check.await {
        Ok(mapped) => channel = mapped.unwrap_or(channel),
        Err(denial) => return denial.respond(),
    }
    match hub.presence(&channel, page).await {
        Ok(snapshot) => push_http::json(
            StatusCode::OK,
            Bytes::from(body(channel.as_str(), &snapshot).to_string()),
        ),
        Err(err) => push_http::error_for(&err),
    }
}

/// The answer's JSON.
fn body(channel: &str, snapshot: &PresenceSnapshot) -> Value {
    let counts = |counts: &Counts| -> Value {
        Value::Object(
            counts
                .iter()
                .map(|(technique, n)| (technique.clone(), json!(n)))
                .collect::<Map<_, _>>(),
        )
    };
    json!({
        "channel": channel,
        "users": snapshot.users.iter().map(|user| json!({
            "user": user.user,
            "connections": counts(&user.connections),
        })).collect::<Vec<_>>(),
        "user_count": snapshot.user_count,
        "anonymous": counts(&snapshot.anonymous),
        "connections": counts(&snapshot.connections),
        "next": snapshot.next,
    })
}
