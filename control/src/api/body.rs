//! Request bodies: the size limit, and JSON or YAML into a JSON value.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use serde_json::Value;

use super::error::ApiError;

/// After refusing a body as too large, read and discard up to this much
/// more of it (at most for [`DRAIN_TIME`]) before the connection closes.
/// Closing a socket with unread data makes the kernel send a reset, and a
/// reset can destroy the 413 response in the client's receive buffer before
/// the client reads it, which then sees a broken connection instead.
const DRAIN_BYTES: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The body formats [`decode`] accepts.
pub(super) const ACCEPTED: &str = "application/json, application/yaml";

/// Read the whole body, refusing more than `limit` bytes: at once from
/// `Content-Length`, or once a chunked body passes the limit.
///
/// # Errors
/// [`ApiError::TooLarge`]; [`ApiError::BadRequest`] when the client stops
/// sending half-way.
pub(super) async fn read(parts: &Parts, mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX)) {
        tokio::spawn(drain(body));
        return Err(ApiError::TooLarge { limit });
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |d| usize::try_from(d).unwrap_or(0)));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                tokio::spawn(drain(body));
                return Err(ApiError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Discard what is left of a refused body; see [`DRAIN_BYTES`].
async fn drain(mut body: Incoming) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| u64::try_from(d.len()).unwrap_or(u64::MAX));
            left = left.saturating_sub(len);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// The media type of the request, without parameters, lower case; JSON when
/// absent.
pub(super) fn media_type(parts: &Parts) -> String {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or("application/json", |v| v.split(';').next().unwrap_or(v))
        .trim()
        .to_ascii_lowercase()
}

/// Decode a JSON or YAML body into a JSON object.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`] for another media type,
/// [`ApiError::BadRequest`] for a body that does not parse or is not an
/// object.
pub(super) fn decode(media_type: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = match media_type {
        "application/json" | "application/merge-patch+json" | "" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("the request body is not valid YAML: {e}")))?,
        other => {
            return Err(ApiError::UnsupportedMediaType { content_type: other.to_owned(), accepted: ACCEPTED });
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON or YAML object".to_owned()));
    }
    Ok(value)
}
