//! Durations and byte sizes as people type them on the command line
//! ("10s", "500ms", "2m"; "64MiB", "4096") and as the reports print them.
//!
//! Kept apart from the benchmarks so every `ringraft bench` flag parses
//! numbers the same way and the rules are tested in one place.

use std::time::Duration;

/// Longest duration any flag accepts; keeps `Duration` arithmetic far from overflow.
pub const DURATION_PARSE_MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses "10s", "500ms", "2m", "1.5s", "250us", "1h". A unit is required:
/// a bare "10" is ambiguous and refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ns: f64 = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "" => return Err(format!("duration {text:?} needs a unit: ns, us, ms, s, m or h (e.g. \"10s\", \"500ms\")")),
        u => return Err(format!("duration {text:?}: unknown unit {u:?} (use ns, us, ms, s, m or h)")),
    };
    let value: f64 = num.parse().map_err(|_| format!("duration {text:?}: {num:?} is not a number"))?;
    let ns = value * unit_ns;
    if !ns.is_finite() || ns > DURATION_PARSE_MAX.as_nanos() as f64 {
        return Err(format!("duration {text:?} is longer than {}", format_duration(DURATION_PARSE_MAX)));
    }
    Ok(Duration::from_nanos(ns.round() as u64))
}

/// Parses a byte count: a plain integer, or one with a binary suffix
/// (K/KiB, M/MiB, G/GiB; 1 KiB = 1024 B). Decimal "MB" is refused as
/// ambiguous.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        u => {
            return Err(format!(
                "size {text:?}: unknown unit {u:?} (use a plain byte count or K/KiB, M/MiB, G/GiB, which are powers of 1024)"
            ))
        }
    };
    let value: u64 = num.parse().map_err(|_| format!("size {text:?}: {num:?} is not a whole number"))?;
    value.checked_mul(1u64 << shift).ok_or_else(|| format!("size {text:?} does not fit 64 bits"))
}

/// Checks a count flag against its limits: `--NAME V is out of range LO..=HI`.
pub fn check_range(name: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("--{name} {v} is out of range {lo}..={hi}"))
    }
}

/// Checks a duration flag against its limits: `--NAME D is out of range LO..=HI`.
pub fn check_duration_range(name: &str, d: Duration, lo: Duration, hi: Duration) -> Result<(), String> {
    if (lo..=hi).contains(&d) {
        Ok(())
    } else {
        Err(format!(
            "--{name} {} is out of range {}..={}",
            format_duration(d),
            format_duration(lo),
            format_duration(hi)
        ))
    }
}

/// "3s", "500ms", "1.5s", "250us".
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000_000 {
        format!("{:.3}s", d.as_secs_f64())
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else {
        format!("{}us", d.as_micros())
    }
}

/// "64 MiB", "1 KiB", "1000 B": the largest binary unit that divides it.
pub fn format_bytes(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_every_unit_and_refuse_bare_numbers() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("100000h").is_err());
    }

    #[test]
    fn sizes_parse_binary_suffixes_and_refuse_decimal_ones() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert!(parse_bytes("64MB").is_err());
        assert!(parse_bytes("1.5M").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        for d in [Duration::from_secs(3), Duration::from_millis(500), Duration::from_micros(250)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        for n in [64u64 << 20, 1 << 10, 1000, 3 << 30] {
            assert_eq!(parse_bytes(&format_bytes(n).replace(' ', "")), Ok(n));
        }
    }
}
