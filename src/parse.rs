//! Values that several commands' settings read the same way: durations and Kafka topic names.
//! Below `config`, `budget` and the other commands' settings, which all take them from here.

use std::time::Duration;

/// A duration flag: humantime syntax (`250ms`, `10s`, `180days`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 10s, 5m, 180days)"))
}

/// Checks that `topic`, the value of `flag`, is a name Kafka accepts; the error names the flag.
pub fn validate_topic(flag: &str, topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{flag} {topic:?} is not a valid Kafka topic name (1-249 characters of a-z A-Z 0-9 . _ -)"))
    }
}
