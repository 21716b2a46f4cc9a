//! `cassio set KEY VALUE --ttl 10s`: the TTL argument.

use std::time::Duration;

/// Parses a TTL: a positive whole number with a unit `ms`, `s`, `m`, `h`
/// or `d` (`10s`, `500ms`, `2h`), or a bare number of seconds (`10`).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a TTL: give a whole number and a unit, like 10s"))?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown TTL unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    let ms = n
        .checked_mul(per_unit_ms)
        .ok_or_else(|| format!("TTL {s:?} is too long"))?;
    if ms == 0 {
        return Err(format!("TTL {s:?} must be more than zero"));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_their_units_and_bad_ones_are_refused() {
        assert_eq!(parse_ttl("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ttl("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ttl("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "0s", "s", "-1s", "1.5s", "10x", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
