//! The units people write limits in: sizes (`64MiB`) and durations (`500ms`, `1h`), as the CLI's flags,
//! the server's config file and the API's query parameters take them.

/// Splits `128MiB` into `128` and `MiB`; `expected` says what the value should look like.
fn number_and_unit<'a>(s: &'a str, expected: &str) -> Result<(u64, &'a str), String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("expected {expected}, got {s:?}"))?;
    Ok((number, unit.trim()))
}

/// Parses a size (`512`, `64KiB`, `16MiB`, `1GiB`, also `K`/`M`/`G`/`KB`/`MB`/`GB` as binary units) to bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (number, unit) = number_and_unit(s, "a size such as 128MiB")?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}: use KiB, MiB or GiB")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a memory size to whole MiB (`128MiB`, `1GiB`; a bare number is MiB).
pub fn parse_memory_mb(s: &str) -> Result<u64, String> {
    if s.trim().chars().all(|c| c.is_ascii_digit()) {
        return s.trim().parse().map_err(|_| format!("invalid size {s:?}"));
    }
    let bytes = parse_bytes(s)?;
    if bytes % (1 << 20) != 0 {
        return Err(format!("memory must be a whole number of MiB, got {s:?}"));
    }
    Ok(bytes >> 20)
}

/// Parses a duration (`500ms`, `10s`, `2m`; a bare number is milliseconds) to milliseconds.
pub fn parse_timeout_ms(s: &str) -> Result<u64, String> {
    let (number, unit) = number_and_unit(s, "a duration such as 10s")?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit {other:?}: use ms, s, m, h or d"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_memory_mb("128MiB"), Ok(128));
        assert_eq!(parse_memory_mb("1GiB"), Ok(1024));
        assert_eq!(parse_memory_mb("64"), Ok(64));
        assert!(parse_memory_mb("1KiB").is_err());
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_timeout_ms("10s"), Ok(10_000));
        assert_eq!(parse_timeout_ms("250ms"), Ok(250));
        assert_eq!(parse_timeout_ms("2m"), Ok(120_000));
        assert_eq!(parse_timeout_ms("7d"), Ok(7 * 86_400_000));
        assert!(parse_timeout_ms("soon").is_err());
    }
}
