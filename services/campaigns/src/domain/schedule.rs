//! Send times with an IANA time zone, aware of daylight saving time.
//!
//! Marketers schedule in wall-clock time ("9:00 in Berlin"). [`resolve`] turns
//! such a time into a UTC instant:
//!
//! * a time inside a DST gap (clocks spring forward) does not exist and is
//!   refused with [`ScheduleError::NonexistentLocalTime`];
//! * a time inside a DST overlap (clocks fall back) happens twice and resolves
//!   to the **earlier** instant, flagged with [`ResolvedSchedule::ambiguous`].
//!
//! [`resolve_any`] additionally accepts an absolute RFC 3339 instant.
//! Both refuse times less than `min_lead` after `now` and more than two years
//! (24 calendar months) after `now`.

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, LocalResult, Months, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// How far ahead a campaign may be scheduled, in calendar months.
pub const MAX_MONTHS_AHEAD: u32 = 24;

const TIME_ZONE_FIELD: &str = "schedule.time_zone";
const SEND_AT_FIELD: &str = "schedule.send_at";

/// Why a send time was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// The time zone is not an IANA name known to this build.
    UnknownTimeZone(String),
    /// The send time could not be parsed; holds the input.
    BadLocalTime(String),
    /// The wall-clock time falls into a DST gap.
    NonexistentLocalTime {
        /// The local time as entered (normalised to `YYYY-MM-DDTHH:MM:SS`).
        local: String,
        /// The IANA time zone name.
        tz: String,
    },
    /// The send time is in the past or closer to now than the minimum lead.
    InPast {
        /// The resolved instant.
        send_at: DateTime<Utc>,
    },
    /// The send time is more than two years ahead.
    TooFarAhead,
}

impl ScheduleError {
    /// The request field this error is about:
    /// `"schedule.time_zone"` or `"schedule.send_at"`.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::UnknownTimeZone(_) => TIME_ZONE_FIELD,
            _ => SEND_AT_FIELD,
        }
    }
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::UnknownTimeZone(tz) => write!(
                f,
                "\"{tz}\" is not a known time zone; use an IANA name such as \"Europe/Berlin\" or \"America/New_York\""
            ),
            ScheduleError::BadLocalTime(input) => write!(
                f,
                "\"{input}\" is not a valid send time; use \"YYYY-MM-DDTHH:MM\" (for example \"2026-12-01T09:00\") or an RFC 3339 time with an offset"
            ),
            ScheduleError::NonexistentLocalTime { local, tz } => write!(
                f,
                "{local} does not exist in {tz}: clocks skip that hour when daylight saving time starts; choose a time outside the skipped hour"
            ),
            ScheduleError::InPast { send_at } => write!(
                f,
                "the send time {} has already passed or is too soon; choose a later time",
                send_at.format("%Y-%m-%d %H:%M UTC")
            ),
            ScheduleError::TooFarAhead => write!(
                f,
                "the send time is more than {} months ahead; campaigns can be scheduled at most two years in advance",
                MAX_MONTHS_AHEAD
            ),
        }
    }
}

impl std::error::Error for ScheduleError {}

/// A validated send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedSchedule {
    /// The instant to send at.
    pub send_at: DateTime<Utc>,
    /// The time zone the schedule is displayed in.
    pub time_zone: Tz,
    /// The wall-clock time of `send_at` in `time_zone`.
    pub local: NaiveDateTime,
    /// The wall-clock time occurs twice (DST fall-back); the earlier was used.
    pub ambiguous: bool,
}

/// `local` is a wall-clock time "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS"
/// (no offset) in `tz`.
///
/// A time inside a DST gap does not exist: [`ScheduleError::NonexistentLocalTime`].
/// An ambiguous time (DST fall-back) resolves to the EARLIER instant with
/// `ambiguous = true`. `send_at` must be at least `min_lead` after `now`
/// ([`ScheduleError::InPast`] otherwise) and at most two years ahead.
pub fn resolve(
    local: &str,
    tz: &str,
    now: DateTime<Utc>,
    min_lead: Duration,
) -> Result<ResolvedSchedule, ScheduleError> {
    let time_zone = parse_time_zone(tz)?;
    let naive = parse_local(local)?;
    let (instant, ambiguous) = localize(naive, time_zone)?;
    let send_at = instant.with_timezone(&Utc);
    check_window(send_at, now, min_lead)?;
    Ok(ResolvedSchedule {
        send_at,
        time_zone,
        local: naive,
        ambiguous,
    })
}

/// Like [`resolve`], but also accepts an absolute RFC 3339 instant with an
/// offset (e.g. "2026-12-01T09:00:00Z" or "2026-12-01T09:00:00+02:00"). Then
/// `tz` is only used for display (`local`), `ambiguous` is false, and the same
/// past/ahead checks apply.
pub fn resolve_any(
    send_at: &str,
    tz: &str,
    now: DateTime<Utc>,
    min_lead: Duration,
) -> Result<ResolvedSchedule, ScheduleError> {
    let trimmed = send_at.trim();
    match DateTime::parse_from_rfc3339(trimmed) {
        Ok(instant) => resolve_instant(instant, tz, now, min_lead),
        Err(_) => resolve(trimmed, tz, now, min_lead),
    }
}

/// Resolves an instant that already carries its offset.
fn resolve_instant(
    instant: DateTime<FixedOffset>,
    tz: &str,
    now: DateTime<Utc>,
    min_lead: Duration,
) -> Result<ResolvedSchedule, ScheduleError> {
    let time_zone = parse_time_zone(tz)?;
    let send_at = instant.with_timezone(&Utc);
    check_window(send_at, now, min_lead)?;
    Ok(ResolvedSchedule {
        send_at,
        time_zone,
        local: send_at.with_timezone(&time_zone).naive_local(),
        ambiguous: false,
    })
}

/// Parses an IANA time zone name (exact, case-sensitive).
fn parse_time_zone(tz: &str) -> Result<Tz, ScheduleError> {
    tz.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone(tz.to_owned()))
}

/// Parses "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS".
fn parse_local(local: &str) -> Result<NaiveDateTime, ScheduleError> {
    let trimmed = local.trim();
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(trimmed, format).ok())
        .ok_or_else(|| ScheduleError::BadLocalTime(local.to_owned()))
}

/// Maps a wall-clock time to an instant; returns whether it was ambiguous.
fn localize(naive: NaiveDateTime, tz: Tz) -> Result<(DateTime<Tz>, bool), ScheduleError> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(instant) => Ok((instant, false)),
        LocalResult::Ambiguous(earlier, later) => Ok((earlier.min(later), true)),
        LocalResult::None => Err(ScheduleError::NonexistentLocalTime {
            local: naive.format("%Y-%m-%dT%H:%M:%S").to_string(),
            tz: tz.name().to_owned(),
        }),
    }
}

/// Checks `now + min_lead <= send_at <= now + 24 months`.
fn check_window(
    send_at: DateTime<Utc>,
    now: DateTime<Utc>,
    min_lead: Duration,
) -> Result<(), ScheduleError> {
    let earliest = now.checked_add_signed(min_lead).unwrap_or(now);
    if send_at < earliest {
        return Err(ScheduleError::InPast { send_at });
    }
    let latest = now
        .checked_add_months(Months::new(MAX_MONTHS_AHEAD))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if send_at > latest {
        return Err(ScheduleError::TooFarAhead);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        utc("2026-01-15T12:00:00Z")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid test instant")
            .with_timezone(&Utc)
    }

    fn lead() -> Duration {
        Duration::minutes(5)
    }

    #[test]
    fn new_york_spring_gap_is_refused() {
        let err = resolve("2026-03-08T02:30", "America/New_York", now(), lead()).expect_err("gap");
        assert_eq!(
            err,
            ScheduleError::NonexistentLocalTime {
                local: "2026-03-08T02:30:00".into(),
                tz: "America/New_York".into()
            }
        );
        assert_eq!(err.field(), "schedule.send_at");
        let msg = err.to_string();
        assert!(msg.contains("skip that hour"), "{msg}");
        assert!(msg.contains("America/New_York"), "{msg}");
    }

    #[test]
    fn new_york_fall_back_takes_earlier() {
        let r = resolve("2026-11-01T01:30", "America/New_York", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-11-01T05:30:00Z"));
        assert!(r.ambiguous);
        assert_eq!(r.time_zone, chrono_tz::America::New_York);
        assert_eq!(r.local.to_string(), "2026-11-01 01:30:00");
    }

    #[test]
    fn berlin_gap_and_overlap() {
        let err = resolve("2026-03-29T02:30", "Europe/Berlin", now(), lead()).expect_err("gap");
        assert!(matches!(err, ScheduleError::NonexistentLocalTime { .. }));
        let r = resolve("2026-10-25T02:30:00", "Europe/Berlin", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-10-25T00:30:00Z"));
        assert!(r.ambiguous);
    }

    #[test]
    fn normal_times() {
        let r = resolve("2026-06-01T09:00", "Asia/Kolkata", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-06-01T03:30:00Z"));
        assert!(!r.ambiguous);
        let r = resolve("2026-07-01T09:00", "Europe/Berlin", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-07-01T07:00:00Z"));
    }

    #[test]
    fn lord_howe_half_hour_dst() {
        // Lord Howe moves clocks by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
        let err =
            resolve("2026-10-04T02:15", "Australia/Lord_Howe", now(), lead()).expect_err("gap");
        assert!(matches!(err, ScheduleError::NonexistentLocalTime { .. }));
        // Fall back 02:00 -> 01:30 on 2026-04-05: 01:45 happens twice
        // (+11:00 first, then +10:30).
        let r = resolve("2026-04-05T01:45", "Australia/Lord_Howe", now(), lead()).expect("ok");
        assert!(r.ambiguous);
        assert_eq!(r.send_at, utc("2026-04-04T14:45:00Z"));
    }

    #[test]
    fn unknown_time_zone() {
        let err = resolve("2026-06-01T09:00", "Mars/Olympus", now(), lead()).expect_err("zone");
        assert_eq!(err, ScheduleError::UnknownTimeZone("Mars/Olympus".into()));
        assert_eq!(err.field(), "schedule.time_zone");
        assert!(err.to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn bad_local_time() {
        for input in [
            "",
            "tomorrow",
            "2026-02-30T09:00",
            "2026-06-01 09:00",
            "2026-06-01T25:00",
        ] {
            let err = resolve(input, "UTC", now(), lead()).expect_err(input);
            assert_eq!(err, ScheduleError::BadLocalTime(input.into()));
            assert_eq!(err.field(), "schedule.send_at");
        }
    }

    #[test]
    fn past_and_min_lead_refused() {
        let err = resolve("2026-01-01T09:00", "UTC", now(), lead()).expect_err("past");
        assert_eq!(
            err,
            ScheduleError::InPast {
                send_at: utc("2026-01-01T09:00:00Z")
            }
        );
        assert!(err.to_string().contains("2026-01-01 09:00 UTC"));
        // 2 minutes ahead, but the lead is 5 minutes.
        let err = resolve("2026-01-15T12:02", "UTC", now(), lead()).expect_err("too soon");
        assert!(matches!(err, ScheduleError::InPast { .. }));
        assert!(resolve("2026-01-15T12:05", "UTC", now(), lead()).is_ok());
    }

    #[test]
    fn two_years_ahead_refused() {
        assert!(resolve("2028-01-15T12:00", "UTC", now(), lead()).is_ok());
        let err = resolve("2028-01-15T12:01", "UTC", now(), lead()).expect_err("too far");
        assert_eq!(err, ScheduleError::TooFarAhead);
        assert_eq!(err.field(), "schedule.send_at");
    }

    #[test]
    fn rfc3339_input() {
        let r = resolve_any("2026-12-01T09:00:00Z", "Europe/Berlin", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-12-01T09:00:00Z"));
        assert_eq!(r.local.to_string(), "2026-12-01 10:00:00");
        assert!(!r.ambiguous);
        let r = resolve_any("2026-12-01T09:00:00+02:00", "UTC", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-12-01T07:00:00Z"));
        let err = resolve_any("2020-01-01T00:00:00Z", "UTC", now(), lead()).expect_err("past");
        assert!(matches!(err, ScheduleError::InPast { .. }));
        let err =
            resolve_any("2026-12-01T09:00:00Z", "Mars/Olympus", now(), lead()).expect_err("zone");
        assert_eq!(err.field(), "schedule.time_zone");
    }

    #[test]
    fn resolve_any_falls_back_to_local() {
        let r = resolve_any("2026-11-01T01:30", "America/New_York", now(), lead()).expect("ok");
        assert_eq!(r.send_at, utc("2026-11-01T05:30:00Z"));
        assert!(r.ambiguous);
        let err = resolve_any("soon", "UTC", now(), lead()).expect_err("bad");
        assert_eq!(err, ScheduleError::BadLocalTime("soon".into()));
    }
}
