//! Expiry over HTTP: `?ttl=SECONDS` on `PUT`/`POST` of `/kv/{key}` and
//! `/ks/{ks}/kv/{key}` writes a value that ends that many seconds after the
//! write's timestamp (HLC time, agreed by every replica); `GET` answers the
//! seconds left in a `Cassio-TTL` header (rounded up, absent when the value
//! never expires). An expired value answers 404 like a missing one.

use super::error;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use cassio_core::Expiry;

/// The response header that carries a value's remaining TTL in seconds.
pub const TTL_HEADER: HeaderName = HeaderName::from_static("cassio-ttl");

/// The expiry `?ttl=` asks for: `None` without the parameter; a positive
/// whole number of seconds that fits, or a 400 answer naming the problem.
pub(super) fn parse(ttl: Option<&str>) -> Result<Option<Expiry>, Box<Response>> {
    let Some(raw) = ttl else {
        return Ok(None);
    };
    let bad = || {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_ttl",
            format!("ttl={raw:?}: give a positive whole number of seconds"),
        ))
    };
    let secs: u64 = raw.parse().map_err(|_| bad())?;
    if secs == 0 {
        return Err(bad());
    }
    // Kept within i64 milliseconds, the range Redis allows too.
    let micros = secs
        .checked_mul(1_000_000)
        .filter(|m| *m / 1_000 <= i64::MAX as u64 / 2)
        .ok_or_else(bad)?;
    Ok(Some(Expiry::After(micros)))
}

/// The `Cassio-TTL` header for a value ending at `expires` read at HLC time
/// `now` (both micros): the whole seconds left, rounded up so a value still
/// readable never claims 0.
pub(super) fn header(expires: Option<u64>, now: u64) -> Option<(HeaderName, HeaderValue)> {
    let left = expires?.saturating_sub(now).div_ceil(1_000_000);
    Some((TTL_HEADER, HeaderValue::from(left)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parameters_parse_and_bad_ones_are_refused() {
        assert_eq!(parse(None).ok(), Some(None));
        assert_eq!(
            parse(Some("10")).ok(),
            Some(Some(Expiry::After(10_000_000)))
        );
        for bad in ["0", "-1", "1.5", "ten", "", "99999999999999999999"] {
            let r = parse(Some(bad)).expect_err(bad);
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn the_header_rounds_the_seconds_left_up() {
        assert!(header(None, 5).is_none());
        let (name, v) = header(Some(10_500_000), 1_000_000).expect("header");
        assert_eq!((name.as_str(), v.to_str().ok()), ("cassio-ttl", Some("10")));
        let (_, v) = header(Some(10), 11).expect("header");
        assert_eq!(v.to_str().ok(), Some("0"));
    }
}
