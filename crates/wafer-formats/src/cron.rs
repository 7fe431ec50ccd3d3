//! Cron schedules, as a function's `schedule` gives them (UTC).

use chrono::{DateTime, Utc};

/// The most ticks walked to find the latest missed one (a seconds schedule missed for a day is 86,400).
const MAX_WALK: usize = 1_000_000;

/// Parses a cron expression: five fields (`min hour day month weekday`), six with seconds first, or seven
/// with seconds first and a year last.
pub fn parse(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        _ => {
            return Err(format!(
                "schedule {expr:?} has {fields} fields; expected 5 (min hour day month weekday), 6 \
                 with seconds first, or 7 with seconds first and a year last"
            ))
        }
    };
    full.parse::<cron::Schedule>()
        .map_err(|e| format!("schedule {expr:?} is not a valid cron expression: {e}"))
}

/// The latest tick of `schedule` after `from` and at or before `now` (milliseconds since the epoch),
/// walking at most a million ticks.
pub fn latest_tick(schedule: &cron::Schedule, from: i64, now: i64) -> Option<i64> {
    let from = DateTime::<Utc>::from_timestamp_millis(from)?;
    schedule
        .after(&from)
        .take(MAX_WALK)
        .map(|t| t.timestamp_millis())
        .take_while(|t| *t <= now)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions_parse() {
        assert!(parse("*/5 * * * *").is_ok());
        assert!(parse("*/2 * * * * *").is_ok());
        assert!(parse("0 0 12 * * * 2030").is_ok());
        assert!(parse("* * *").unwrap_err().contains("3 fields"));
        assert!(parse("61 * * * *").is_err());
    }

    #[test]
    fn missed_ticks_collapse_into_the_latest() {
        let schedule = parse("0 * * * *").unwrap(); // hourly
        let hour = 3_600_000;
        let ticks = |from, now| latest_tick(&schedule, from, now);
        assert_eq!(ticks(0, 5 * hour + 10), Some(5 * hour));
        assert_eq!(ticks(5 * hour, 5 * hour + 10), None);
        assert_eq!(ticks(5 * hour, 6 * hour), Some(6 * hour));
    }
}
