//! What a CloudWatch Logs answer means for the events of one request.
//!
//! Retryable (the driver backs off and resends): connection failures, timeouts, unreadable
//! responses, throttling, `ServiceUnavailable`, 5xx and 429, expired or rejected credentials
//! (an operator can fix them without losing a line), and the legacy `InvalidSequenceToken`.
//! Missing group or stream: created when `create_missing` is on, otherwise retried so that an
//! operator can create it. `DataAlreadyAccepted`: delivered. Anything else (e.g.
//! `InvalidParameterException`) rejects the request's events into the dead letters with the
//! service's words. A 200 may still carry `rejectedLogEventsInfo`: the events it names (too
//! old, too new, expired past the retention) are rejected, the rest delivered.

use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;

/// The meaning of a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Send again after a backoff.
    Retry(String),
    /// The events will never be accepted as they are.
    Reject(String),
    /// The service already has them (legacy sequence-token answer).
    Delivered,
    /// The group or the stream does not exist.
    Missing(String),
}

const RETRY_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
    "OperationAbortedException",
    "InvalidSequenceTokenException",
    "UnrecognizedClientException",
    "AccessDeniedException",
    "ExpiredTokenException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "RequestExpired",
];

/// Classifies an SDK error of any CloudWatch Logs operation.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Class
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => Class::Retry("request timed out".to_owned()),
        SdkError::DispatchFailure(e) => {
            Class::Retry(format!("cannot reach CloudWatch Logs: {e:?}"))
        }
        SdkError::ResponseError(_) => {
            Class::Retry("unreadable response from CloudWatch Logs".to_owned())
        }
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().unwrap_or("unknown");
            let reason = format!("{code}: {}", e.message().unwrap_or("no message"));
            let status = Some(ctx.raw().status().as_u16());
            classify_code(code, status, reason)
        }
        // Building the request failed (e.g. no region, no credentials): nothing was sent.
        other => Class::Retry(format!(
            "cannot build the request: {}",
            aws_sdk_cloudwatchlogs::error::DisplayErrorContext(other)
        )),
    }
}

/// Classifies by the error code (and the HTTP status when the code is unknown).
pub fn classify_code(code: &str, status: Option<u16>, reason: String) -> Class {
    if code == "DataAlreadyAcceptedException" {
        return Class::Delivered;
    }
    if code == "ResourceNotFoundException" {
        return Class::Missing(reason);
    }
    if RETRY_CODES.contains(&code) || status.is_some_and(|s| s >= 500 || s == 429) {
        return Class::Retry(reason);
    }
    Class::Reject(reason)
}

const TOO_OLD: &str = "rejected by CloudWatch Logs: event too old (more than 14 days, or older than the group's retention)";
const EXPIRED: &str =
    "rejected by CloudWatch Logs: event expired (older than the group's retention)";
const TOO_NEW: &str =
    "rejected by CloudWatch Logs: event too new (more than 2 hours in the future)";
const DAY_MS: i64 = 86_400_000;

/// Per event of a request (given the events' timestamps in ms, sorted, and the time now):
/// the reason the service rejected it, if it did.
///
/// The API reference calls `tooOldLogEventEndIndex` "the index of the last log event that is
/// too old" and "exclusive" in one breath, and emulators fill it inclusively (moto also
/// reports the *last* too-new index rather than the first). So the boundary event is judged
/// by its own timestamp against the documented windows (14 days back, 2 hours ahead), and
/// `expiredLogEventEndIndex` (retention unknown here) is taken inclusively: at worst an
/// accepted event is also written to the dead letters, never is a dropped one counted as
/// delivered.
pub fn rejected(
    info: Option<&RejectedLogEventsInfo>,
    timestamps: &[i64],
    now_ms: i64,
) -> Vec<Option<&'static str>> {
    let n = timestamps.len();
    let mut out = vec![None; n];
    let Some(info) = info else {
        return out;
    };
    let clamp = |i: i32| (i.max(0) as usize).min(n);
    if let Some(end) = info.expired_log_event_end_index() {
        let end = clamp(end.saturating_add(1));
        for o in &mut out[..end] {
            *o = Some(EXPIRED);
        }
    }
    if let Some(end) = info.too_old_log_event_end_index() {
        let end = clamp(end);
        for o in &mut out[..end] {
            *o = Some(TOO_OLD);
        }
        if end < n && timestamps[end] < now_ms - 14 * DAY_MS {
            out[end] = Some(TOO_OLD);
        }
    }
    if let Some(start) = info.too_new_log_event_start_index() {
        let mut start = clamp(start);
        while start > 0 && timestamps[start - 1] > now_ms + 2 * 3_600_000 {
            start -= 1;
        }
        for o in &mut out[start..] {
            *o = Some(TOO_NEW);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        let r = |c: &str, s: Option<u16>| classify_code(c, s, c.to_owned());
        assert_eq!(
            r("ThrottlingException", Some(400)),
            Class::Retry("ThrottlingException".into())
        );
        assert!(matches!(
            r("ServiceUnavailableException", None),
            Class::Retry(_)
        ));
        assert!(matches!(r("Whatever", Some(503)), Class::Retry(_)));
        assert!(matches!(r("Whatever", Some(429)), Class::Retry(_)));
        assert!(matches!(
            r("InvalidParameterException", Some(400)),
            Class::Reject(_)
        ));
        assert!(matches!(
            r("ResourceNotFoundException", Some(400)),
            Class::Missing(_)
        ));
        assert_eq!(
            r("DataAlreadyAcceptedException", Some(400)),
            Class::Delivered
        );
    }

    #[test]
    fn rejected_info_maps_indices() {
        let now = 100 * DAY_MS;
        let old = now - 15 * DAY_MS;
        let new = now + 3 * 3_600_000;
        let ts = [old, old, now, now, new];
        let info = RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(2)
            .too_new_log_event_start_index(4)
            .build();
        let r = rejected(Some(&info), &ts, now);
        let flags: Vec<bool> = r.iter().map(Option::is_some).collect();
        assert_eq!(flags, vec![true, true, false, false, true]);
        assert!(r[0].unwrap().contains("too old"));
        assert!(r[4].unwrap().contains("too new"));
        // An emulator's inclusive end index (moto: 1 = the last too-old event) and its last
        // too-new index are read the same way, by the events' own timestamps.
        let ts = [old, old, now, new, new];
        let info = RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(1)
            .too_new_log_event_start_index(4)
            .build();
        let flags: Vec<bool> = rejected(Some(&info), &ts, now)
            .iter()
            .map(Option::is_some)
            .collect();
        assert_eq!(flags, vec![true, true, false, true, true]);
        // Out-of-range indices from a confused server never panic.
        let info = RejectedLogEventsInfo::builder()
            .expired_log_event_end_index(99)
            .too_new_log_event_start_index(-3)
            .build();
        assert!(
            rejected(Some(&info), &[now; 3], now)
                .iter()
                .all(Option::is_some)
        );
        assert!(rejected(None, &[now; 3], now).iter().all(Option::is_none));
    }
}
