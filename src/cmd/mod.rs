//! The subcommands of the `ringraft` binary, one file each (the WAL tools
//! and the benchmarks live in their own crates).

pub mod ctl;
pub mod local;
pub mod pd;
pub mod pd_view;
pub mod server;

/// Longest duration a flag takes (a week).
const DURATION_FLAG_MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// A duration flag: a number with a unit — "250ms", "2s", "1.5s", "30m",
/// "2h" — or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let units = [("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)];
    let (n, scale) = units.iter().find_map(|(u, scale)| Some((s.strip_suffix(u)?, *scale))).unwrap_or((s, 1.0));
    let secs = n.trim().parse::<f64>().map_err(|_| format!("{s:?}: a duration like 250ms, 2s, 30m or 1h"))? * scale;
    if !(0.001..=DURATION_FLAG_MAX_SECS).contains(&secs) {
        return Err(format!("{s:?}: between 1ms and 168h"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_ms_s_m_h_or_bare_seconds_and_refuse_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        for bad in ["", "m", "5x", "0s", "169h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
