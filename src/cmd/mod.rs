//! The subcommands of the `ringraft` binary, one file each (the WAL tools
//! and the benchmarks live in their own crates).

pub mod ctl;
pub mod local;
pub mod pd;
pub mod pd_view;
pub mod server;

/// A duration flag: "250ms", "2s" or "1.5s".
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let secs = n.trim().parse::<f64>().map_err(|_| format!("{s:?}: a duration like 250ms or 2s"))? * scale;
    if !(0.001..=3600.0).contains(&secs) {
        return Err(format!("{s:?}: between 1ms and 3600s"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
