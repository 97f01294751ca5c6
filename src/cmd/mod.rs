//! The subcommands of the `ringraft` binary, one file each (the WAL tools
//! and the benchmarks live in their own crates).

pub mod chaos;
pub mod ctl;
pub mod local;
pub mod pd;
pub mod pd_view;
pub mod server;
pub mod sim;

/// A duration flag: a number with a unit — "250ms", "2s", "1.5s", "30m",
/// "2h" (the benchmarks' parser: one rule for every duration flag) — of
/// at least a millisecond.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = bench::units::parse_duration(s)?;
    if d < std::time::Duration::from_millis(1) {
        return Err(format!("duration {s:?} is shorter than 1ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_a_unit_and_at_least_a_millisecond() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "20", "m", "5x", "0s", "10us", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
