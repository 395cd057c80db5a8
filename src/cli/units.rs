//! Human-friendly sizes, durations and rates for flags and summaries.

/// Splits `s` before its first character that cannot be part of the number (digits, and
/// a decimal point where `decimal`) and parses that number; `None` if it does not parse.
pub(crate) fn number_and_unit<T: std::str::FromStr>(s: &str, decimal: bool) -> Option<(T, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || (decimal && c == '.')))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// Parses sizes like `256MiB`, `4M`, `1GiB`, `4096` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit): (u64, _) = number_and_unit(s, false)
        .ok_or_else(|| format!("{s:?} is not a size (examples: 4096, 4MiB, 256MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `90`, `90s`, `10m`, `1h`, `365d` for `--timeout` and `enroll --valid-for`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit): (u64, _) = number_and_unit(s, false)
        .ok_or_else(|| format!("{s:?} is not a duration (examples: 90s, 10m, 1h)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use s, m, h or d)"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(mult)))
}

/// Formats bytes with a binary unit.
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Formats a rate in MiB/s.
pub(crate) fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
