//! Which dead letters a replay takes: the headers the sink wrote ([`crate::delivery::sink::headers`]), read
//! back, and the `--stage` / `--class` / `--code` / `--since` / `--until` filters over them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Headers, Message};

use crate::delivery::sink::headers;
use crate::domain::{failure_class, Stage};

/// What the filters (and the dry-run listing) look at in one dead letter. Absent or unreadable
/// headers are `None`: such a record matches no filter on that field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// `account-sync.error.stage`.
    pub stage: Option<String>,
    /// `account-sync.error.class`; for dead letters written before that header existed, derived
    /// where it is certain (every decode failure is `invalid_input`).
    pub class: Option<String>,
    /// `account-sync.error.code`.
    pub code: Option<i64>,
    /// `account-sync.error.reason`.
    pub reason: Option<String>,
    /// `account-sync.failed-at`, else the record's Kafka timestamp (the sink produced it at that
    /// moment, so the two differ by milliseconds).
    pub failed_at: Option<SystemTime>,
}

impl DeadLetterInfo {
    /// Reads the dead-letter headers of `m`.
    pub fn of(m: &impl Message) -> DeadLetterInfo {
        let mut info = DeadLetterInfo::default();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                    continue;
                };
                match h.key {
                    headers::STAGE => info.stage = Some(value.to_owned()),
                    headers::CLASS => info.class = Some(value.to_owned()),
                    headers::CODE => info.code = value.parse().ok(),
                    headers::REASON => info.reason = Some(value.to_owned()),
                    headers::FAILED_AT => info.failed_at = humantime::parse_rfc3339(value).ok(),
                    _ => {}
                }
            }
        }
        if info.class.is_none() && info.stage.as_deref() == Some(Stage::Decode.as_str()) {
            info.class = Some(failure_class::INVALID_INPUT.to_owned());
        }
        if info.failed_at.is_none() {
            info.failed_at = m
                .timestamp()
                .to_millis()
                .and_then(|ms| u64::try_from(ms).ok())
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        }
        info
    }
}

/// The filters of one replay. Within a field the values are alternatives (`--stage decode
/// --stage check`: either); fields combine with "and". An empty field takes everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `--stage` values.
    pub stages: Vec<String>,
    /// `--class` values.
    pub classes: Vec<String>,
    /// `--code` values.
    pub codes: Vec<i64>,
    /// `--since`: failed at or after.
    pub since: Option<SystemTime>,
    /// `--until`: failed before.
    pub until: Option<SystemTime>,
}

impl Filter {
    /// Whether the dead letter is to be replayed.
    pub fn matches(&self, d: &DeadLetterInfo) -> bool {
        fn any_of<T: PartialEq + ?Sized>(wanted: &[impl AsRef<T>], got: Option<&T>) -> bool {
            wanted.is_empty() || got.is_some_and(|g| wanted.iter().any(|w| w.as_ref() == g))
        }
        let in_window = match (self.since, self.until, d.failed_at) {
            (None, None, _) => true,
            (_, _, None) => false,
            (since, until, Some(t)) => since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u),
        };
        any_of::<str>(&self.stages, d.stage.as_deref())
            && any_of::<str>(&self.classes, d.class.as_deref())
            && (self.codes.is_empty() || d.code.is_some_and(|c| self.codes.contains(&c)))
            && in_window
    }

    /// True when it takes every dead letter.
    pub fn is_everything(&self) -> bool {
        *self == Filter::default()
    }
}

/// Parses `--since` / `--until`: an RFC 3339 time (`2026-11-22T12:00:00Z`, with any UTC offset)
/// or a time ago in humantime syntax (`2h`, `30m`, `7days`), taken from now.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(ago) = crate::parse::parse_duration(s) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{s:?} reaches back before 1970"));
    }
    parse_rfc3339_with_offset(s).ok_or_else(|| {
        format!(
            "{s:?} is neither an RFC 3339 time (2026-11-22T12:00:00Z, 2026-11-22T20:00:00+08:00) nor a time ago (2h, 30m, 7days)"
        )
    })
}

/// humantime reads only UTC (`Z`, `+00:00`); other offsets are applied here.
fn parse_rfc3339_with_offset(s: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Some(t);
    }
    let split = s.len().checked_sub(6).filter(|&i| s.is_char_boundary(i))?;
    let (local, offset) = s.split_at(split);
    let b = offset.as_bytes();
    let east = match b[0] {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    if b[3] != b':'
        || !offset[1..3]
            .bytes()
            .chain(offset[4..].bytes())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let (h, m): (u64, u64) = (offset[1..3].parse().ok()?, offset[4..].parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let d = Duration::from_secs(h * 3600 + m * 60);
    // Local time = UTC + offset, so UTC = local − offset.
    if east {
        t.checked_sub(d)
    } else {
        t.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn dl(stage: &str, class: &str, code: i64, failed_at: &str) -> DeadLetterInfo {
        DeadLetterInfo {
            stage: Some(stage.into()),
            class: Some(class.into()),
            code: Some(code),
            reason: None,
            failed_at: Some(at(failed_at)),
        }
    }

    #[test]
    fn no_filter_takes_everything() {
        let f = Filter::default();
        assert!(f.is_everything());
        assert!(f.matches(&DeadLetterInfo::default()));
    }

    #[test]
    fn values_of_one_flag_are_alternatives_and_flags_combine() {
        let decode = dl("decode", "invalid_input", 0, "2026-01-01T00:00:00Z");
        let rejected = dl("import", "rejected", 40005, "2026-01-01T00:00:00Z");
        let exhausted = dl("check", "retries_exhausted", 70169, "2026-01-01T00:00:00Z");
        let f = Filter {
            stages: vec!["decode".into(), "import".into()],
            ..Filter::default()
        };
        assert!(f.matches(&decode) && f.matches(&rejected) && !f.matches(&exhausted));
        let f = Filter {
            stages: vec!["import".into(), "check".into()],
            classes: vec!["retries_exhausted".into()],
            ..Filter::default()
        };
        assert!(!f.matches(&decode) && !f.matches(&rejected) && f.matches(&exhausted));
        let f = Filter {
            codes: vec![40005, 40601],
            ..Filter::default()
        };
        assert!(!f.matches(&decode) && f.matches(&rejected) && !f.matches(&exhausted));
    }

    #[test]
    fn time_window_is_since_inclusive_until_exclusive() {
        let f = Filter {
            since: Some(at("2026-01-01T10:00:00Z")),
            until: Some(at("2026-01-01T11:00:00Z")),
            ..Filter::default()
        };
        let when = |t| dl("decode", "invalid_input", 0, t);
        assert!(!f.matches(&when("2026-01-01T09:59:59.999Z")));
        assert!(f.matches(&when("2026-01-01T10:00:00Z")));
        assert!(f.matches(&when("2026-01-01T10:59:59.999Z")));
        assert!(!f.matches(&when("2026-01-01T11:00:00Z")));
        assert!(
            !f.matches(&DeadLetterInfo::default()),
            "no time: not in any window"
        );
    }

    #[test]
    fn a_missing_field_matches_no_filter_on_it() {
        let no_code = DeadLetterInfo {
            stage: Some("import".into()),
            ..DeadLetterInfo::default()
        };
        let f = Filter {
            codes: vec![0],
            ..Filter::default()
        };
        assert!(!f.matches(&no_code));
    }

    #[test]
    fn times_parse_as_rfc3339_with_offsets_or_as_a_time_ago() {
        assert_eq!(
            parse_time("2026-11-22T12:00:00Z").unwrap(),
            at("2026-11-22T12:00:00Z")
        );
        assert_eq!(
            parse_time("2026-11-22T20:00:00.5+08:00").unwrap(),
            at("2026-11-22T12:00:00.5Z")
        );
        assert_eq!(
            parse_time("2026-11-22T07:30:00-04:30").unwrap(),
            at("2026-11-22T12:00:00Z")
        );
        let two_hours_ago = parse_time("2h").unwrap();
        let age = SystemTime::now().duration_since(two_hours_ago).unwrap();
        assert!((7199..=7201).contains(&age.as_secs()), "{age:?}");
        for bad in [
            "yesterday",
            "2026-11-22",
            "2026-11-22T12:00:00+25:00",
            "12:00",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
