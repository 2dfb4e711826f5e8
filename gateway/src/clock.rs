//! The clock of the platform's workflows: when applications are submitted and decided, and
//! which day it is for their deadlines, the overdue flag, the reminders and the overdue count.
//!
//! It is the system clock. A debug build (the one the end-to-end tests drive) may be started
//! with `KAIFANG_TEST_NOW` set to an RFC 3339 time: the clock then starts at that time and runs
//! on from there, so a test can submit an application "in late December" on any day of the
//! year. A release build refuses to start with the variable set rather than ignore it.
//! Everything else (audit records, agreements' validity, quotas, TLS) keeps the system clock.

use chrono::{DateTime, TimeDelta, Utc};

/// Environment variable that sets the workflows' clock in debug builds (tests only).
pub const TEST_NOW_ENV: &str = "KAIFANG_TEST_NOW";

/// The workflows' clock: the system clock, moved by a fixed amount in tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    shift: TimeDelta,
}

impl Clock {
    /// The system clock, or the test time `KAIFANG_TEST_NOW` names (debug builds only).
    pub fn from_env() -> Result<Clock, String> {
        match std::env::var(TEST_NOW_ENV) {
            Err(_) => Ok(Clock::default()),
            Ok(text) => Clock::starting_at(&text),
        }
    }

    fn starting_at(text: &str) -> Result<Clock, String> {
        if !cfg!(debug_assertions) {
            return Err(format!("{TEST_NOW_ENV} sets the clock of test builds only; unset it to run a release build"));
        }
        let start: DateTime<Utc> = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("{TEST_NOW_ENV}=`{text}` is not an RFC 3339 time: {e}"))?
            .to_utc();
        let clock = Clock { shift: start - Utc::now() };
        tracing::warn!(now = %start, "the workflows' clock is set by {TEST_NOW_ENV}: for tests only");
        Ok(clock)
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_starts_at_the_time_given_and_runs_on() {
        let clock = Clock::starting_at("2026-12-28T02:00:00Z").unwrap();
        let start: DateTime<Utc> = "2026-12-28T02:00:00Z".parse().unwrap();
        let now = clock.now();
        assert!(now >= start && now - start < TimeDelta::seconds(60), "{now}");
        assert!(Clock::starting_at("28 Dec 2026").unwrap_err().contains("not an RFC 3339 time"));
        let system = Clock::default().now();
        assert!((system - Utc::now()).abs() < TimeDelta::seconds(60));
    }
}
