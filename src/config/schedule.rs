//! A tenant's optional `[schedule]`: when `serve` runs it. `sync` does not use it, but a
//! bad one is refused there too, so a config means the same under both.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use serde::Deserialize;

use crate::error::{without_values, Error, Result};

/// Without a `[schedule]`: every 15 minutes.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(15 * 60);
/// The shortest `every`: a second, so that tests can run a tenant often.
pub const LEAST_EVERY: Duration = Duration::from_secs(1);
/// The longest `every`: 31 days.
pub const MOST_EVERY: Duration = Duration::from_secs(31 * 86_400);
/// Jitter by default: a tenth of `every`, at most this.
const MOST_DEFAULT_JITTER: Duration = Duration::from_secs(60);
/// The longest text a `[schedule]` value may have; longer is no duration, cron or zone.
const MOST_TEXT: usize = 128;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub when: When,
    /// The zone cron expressions and quiet hours are read in (default UTC).
    pub time_zone: chrono_tz::Tz,
    /// No scheduled run starts inside these hours; a run-now request still does.
    pub quiet_hours: Option<QuietHours>,
    /// Each scheduled start is moved later by a random part of this, so that tenants
    /// with the same schedule do not all start at once.
    pub jitter: Duration,
}

#[derive(Debug, Clone)]
pub enum When {
    /// `every = "15m"`: this long after the last run started.
    Every(Duration),
    /// `cron = "0 */2 * * *"`: at the expression's times, in `time_zone`.
    Cron(Box<croner::Cron>),
}

/// `quiet_hours = "22:00-06:00"`: from `from` up to `to`, across midnight when `to` is
/// earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            when: When::Every(DEFAULT_EVERY),
            time_zone: chrono_tz::UTC,
            quiet_hours: None,
            jitter: default_jitter(DEFAULT_EVERY),
        }
    }
}

fn default_jitter(every: Duration) -> Duration {
    (every / 10).min(MOST_DEFAULT_JITTER)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    every: Option<String>,
    cron: Option<String>,
    time_zone: Option<String>,
    quiet_hours: Option<String>,
    jitter: Option<String>,
}

impl Schedule {
    /// Reads `[schedule]` (absent: the default). Errors name the file and key, never
    /// the value.
    pub fn parse(table: Option<toml::Table>, file: &Path) -> Result<Schedule> {
        let Some(table) = table else {
            return Ok(Schedule::default());
        };
        let bad = |key: &str, why: &str| {
            Error::config(format!("{}: [schedule] {key}: {why}", file.display()))
        };
        let raw: RawSchedule =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::config(format!(
                        "{}: [schedule]: {}",
                        file.display(),
                        without_values(e.message())
                    ))
                })?;
        for (key, value) in [
            ("every", &raw.every),
            ("cron", &raw.cron),
            ("time_zone", &raw.time_zone),
            ("quiet_hours", &raw.quiet_hours),
            ("jitter", &raw.jitter),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MOST_TEXT) {
                return Err(bad(key, &format!("is longer than {MOST_TEXT} characters")));
            }
        }
        let when = match (&raw.every, &raw.cron) {
            (Some(_), Some(_)) => return Err(bad("every", "give `every` or `cron`, not both")),
            (Some(every), None) => {
                let every = humantime::parse_duration(every).map_err(|_| {
                    bad(
                        "every",
                        "is not a duration such as \"15m\", \"1h 30m\" or \"2s\"",
                    )
                })?;
                if !(LEAST_EVERY..=MOST_EVERY).contains(&every) {
                    return Err(bad("every", "must be from 1s to 31 days"));
                }
                When::Every(every)
            }
            (None, Some(cron)) => {
                let cron = croner::Cron::from_str(cron).map_err(|_| {
                    bad(
                        "cron",
                        "is not a cron expression: five fields (minute hour day-of-month \
                         month day-of-week), or six with seconds first",
                    )
                })?;
                if cron.find_next_occurrence(&Utc::now(), false).is_err() {
                    return Err(bad("cron", "never comes round"));
                }
                When::Cron(Box::new(cron))
            }
            (None, None) => When::Every(DEFAULT_EVERY),
        };
        let time_zone = match &raw.time_zone {
            None => chrono_tz::UTC,
            Some(zone) => zone.parse::<chrono_tz::Tz>().map_err(|_| {
                bad(
                    "time_zone",
                    "is not an IANA time zone such as \"Europe/Stockholm\" or \"UTC\"",
                )
            })?,
        };
        let quiet_hours = match &raw.quiet_hours {
            None => None,
            Some(text) => Some(parse_quiet_hours(text).ok_or_else(|| {
                bad(
                    "quiet_hours",
                    "is not a span of hours such as \"22:00-06:00\" (24-hour clock, two \
                     different times)",
                )
            })?),
        };
        let jitter = match (&raw.jitter, &when) {
            (Some(jitter), _) => {
                let jitter = humantime::parse_duration(jitter)
                    .map_err(|_| bad("jitter", "is not a duration such as \"30s\" or \"0s\""))?;
                if jitter > Duration::from_secs(3600) {
                    return Err(bad("jitter", "must be at most 1h"));
                }
                jitter
            }
            (None, When::Every(every)) => default_jitter(*every),
            (None, When::Cron(_)) => Duration::ZERO,
        };
        Ok(Schedule {
            when,
            time_zone,
            quiet_hours,
            jitter,
        })
    }

    /// When the next scheduled run is due, given when the last one started (if ever)
    /// and the time now. However many runs were missed since `last`, the answer is one
    /// run: now. The jitter is left to the caller.
    pub fn next_after(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let due = match (&self.when, last) {
            (When::Every(_), None) => now,
            (When::Every(every), Some(last)) => {
                let every = chrono::TimeDelta::from_std(*every).unwrap_or(chrono::TimeDelta::MAX);
                last.checked_add_signed(every).unwrap_or(now).max(now)
            }
            (When::Cron(cron), last) => {
                let local = |t: DateTime<Utc>| t.with_timezone(&self.time_zone);
                let from = last.unwrap_or(now);
                match cron.find_next_occurrence(&local(from), false) {
                    Ok(next) => next.with_timezone(&Utc).max(now),
                    // Checked at load; a year past croner's range waits a day.
                    Err(_) => now + chrono::TimeDelta::days(1),
                }
            }
        };
        self.after_quiet_hours(due)
    }

    /// `t`, or the end of the quiet hours `t` falls in.
    pub fn after_quiet_hours(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let Some(quiet) = self.quiet_hours else {
            return t;
        };
        let local = t.with_timezone(&self.time_zone);
        let time = local.time();
        let inside = match quiet.from < quiet.to {
            true => time >= quiet.from && time < quiet.to,
            false => time >= quiet.from || time < quiet.to,
        };
        if !inside {
            return t;
        }
        let mut day = local.date_naive();
        if quiet.from > quiet.to && time >= quiet.from {
            day = day.succ_opt().unwrap_or(day);
        }
        // A quiet end inside a clock change that skips it: an hour later.
        let end = day.and_time(quiet.to);
        self.time_zone
            .from_local_datetime(&end)
            .earliest()
            .or_else(|| {
                self.time_zone
                    .from_local_datetime(&(end + chrono::TimeDelta::hours(1)))
                    .earliest()
            })
            .map(|end| end.with_timezone(&Utc))
            .unwrap_or(t)
    }
}

fn parse_quiet_hours(text: &str) -> Option<QuietHours> {
    let (from, to) = text.split_once('-')?;
    let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").ok();
    let hours = QuietHours {
        from: time(from)?,
        to: time(to)?,
    };
    (hours.from != hours.to).then_some(hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schedule> {
        let table: toml::Table = toml::from_str(text).unwrap();
        Schedule::parse(Some(table), Path::new("/etc/ovs/t.toml"))
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn without_a_schedule_it_is_every_fifteen_minutes_with_jitter() {
        let s = Schedule::parse(None, Path::new("t.toml")).unwrap();
        assert!(matches!(s.when, When::Every(d) if d == DEFAULT_EVERY));
        assert_eq!(s.jitter, Duration::from_secs(60));
    }

    #[test]
    fn missed_runs_come_to_one_run_now() {
        let s = parse("every = \"15m\"").unwrap();
        let now = at("2026-12-03T12:00:00Z");
        assert_eq!(s.next_after(Some(at("2026-12-01T00:00:00Z")), now), now);
        assert_eq!(
            s.next_after(Some(at("2026-12-03T11:50:00Z")), now),
            at("2026-12-03T12:05:00Z")
        );
        assert_eq!(s.next_after(None, now), now);
        let c = parse("cron = \"0 * * * *\"").unwrap();
        assert_eq!(c.next_after(Some(at("2026-12-01T00:00:00Z")), now), now);
        assert_eq!(
            c.next_after(Some(at("2026-12-03T12:00:00Z")), now),
            at("2026-12-03T13:00:00Z")
        );
    }

    #[test]
    fn cron_and_quiet_hours_are_read_in_the_time_zone() {
        let s = parse(
            "cron = \"30 6 * * *\"\ntime_zone = \"Europe/Stockholm\"\nquiet_hours = \"22:00-07:00\"",
        )
        .unwrap();
        // 06:30 in Stockholm (05:30 UTC in winter) is quiet: moved to 07:00 there.
        let now = at("2026-12-03T04:00:00Z");
        assert_eq!(
            s.next_after(Some(now), now),
            at("2026-12-03T06:00:00Z"),
            "07:00 in Stockholm"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_key_never_the_value() {
        for (text, key) in [
            ("every = \"LEAKsoon\"", "[schedule] every"),
            ("every = \"0s\"", "[schedule] every"),
            ("every = \"400d\"", "[schedule] every"),
            ("cron = \"LEAK * * *\"", "[schedule] cron"),
            ("every = \"1m\"\ncron = \"* * * * *\"", "[schedule] every"),
            ("time_zone = \"Mars/LEAK\"", "[schedule] time_zone"),
            ("quiet_hours = \"25:00-LEAK\"", "[schedule] quiet_hours"),
            ("quiet_hours = \"06:00-06:00\"", "[schedule] quiet_hours"),
            ("jitter = \"2h\"", "[schedule] jitter"),
            ("evry = \"1m\"", "[schedule]: unknown field `evry`"),
            ("every = 15", "[schedule]: invalid type: integer"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, Error::Config(_)));
            let e = e.to_string();
            assert!(e.contains(key) && e.contains("t.toml"), "{text}: {e}");
            assert!(!e.contains("LEAK"), "{e}");
        }
        let long = format!("time_zone = \"{}\"", "x".repeat(100_000));
        assert!(parse(&long).unwrap_err().to_string().contains("longer"));
    }

    #[test]
    fn seconds_are_allowed_for_tests() {
        let s = parse("every = \"2s\"\njitter = \"0s\"").unwrap();
        assert!(matches!(s.when, When::Every(d) if d == Duration::from_secs(2)));
        assert_eq!(s.jitter, Duration::ZERO);
    }
}
