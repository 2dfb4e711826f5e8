//! The working-day calendar behind the owners' 10-working-day deadline.
//!
//! A day is a working day when it is a weekday and not a public holiday, or when it is a
//! make-up working day (调休上班) moved onto a weekend. The holidays and make-up days of each
//! year are data (the State Council publishes them each autumn for the next year), so a
//! calendar covers a set of years and refuses to answer outside them rather than guess.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};

/// The published holiday arrangement of one year.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Year {
    pub year: i32,
    /// Days off: public holidays and the weekdays moved into them.
    pub holidays: BTreeSet<NaiveDate>,
    /// Weekend days worked instead (调休上班).
    pub make_up_workdays: BTreeSet<NaiveDate>,
}

/// Why a calendar cannot answer, or cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("the working-day calendar has no holiday schedule for {0}; add that year's published arrangement")]
    NotCovered(i32),
    #[error("{date} is listed under {year} but falls in {}", date.year())]
    WrongYear { date: NaiveDate, year: i32 },
    #[error("{0} is listed both as a holiday and as a make-up working day")]
    Both(NaiveDate),
    #[error("{0} is a make-up working day but not a weekend day")]
    MakeUpOnWeekday(NaiveDate),
    #[error("{0} is listed twice")]
    DuplicateYear(i32),
}

/// Working days over the years whose holiday schedules it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeSet<i32>,
    holidays: BTreeSet<NaiveDate>,
    make_up_workdays: BTreeSet<NaiveDate>,
}

fn weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl Calendar {
    /// A calendar of these years, each checked: its days in its own year, no day both off and
    /// worked, make-up days on weekends only.
    pub fn new(years: impl IntoIterator<Item = Year>) -> Result<Calendar, CalendarError> {
        let mut calendar = Calendar::default();
        for year in years {
            if !calendar.years.insert(year.year) {
                return Err(CalendarError::DuplicateYear(year.year));
            }
            for &date in year.holidays.iter().chain(&year.make_up_workdays) {
                if date.year() != year.year {
                    return Err(CalendarError::WrongYear { date, year: year.year });
                }
            }
            if let Some(&date) = year.holidays.intersection(&year.make_up_workdays).next() {
                return Err(CalendarError::Both(date));
            }
            if let Some(&date) = year.make_up_workdays.iter().find(|d| !weekend(**d)) {
                return Err(CalendarError::MakeUpOnWeekday(date));
            }
            calendar.holidays.extend(year.holidays);
            calendar.make_up_workdays.extend(year.make_up_workdays);
        }
        Ok(calendar)
    }

    /// The years covered.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        if !self.years.contains(&date.year()) {
            return Err(CalendarError::NotCovered(date.year()));
        }
        Ok(self.make_up_workdays.contains(&date) || (!weekend(date) && !self.holidays.contains(&date)))
    }

    /// The `n`-th working day after `start` (not counting `start` itself): an application
    /// submitted on `start` is due by the end of this day.
    pub fn working_days_after(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut date = start;
        let mut counted = 0;
        while counted < n {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if self.is_working_day(date)? {
                counted += 1;
            }
        }
        Ok(date)
    }

    /// Working days from `from` (exclusive) to `to` (inclusive); negative when `to` is earlier.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<i64, CalendarError> {
        let (low, high, sign) = if to >= from { (from, to, 1) } else { (to, from, -1) };
        let mut count = 0;
        let mut date = low;
        while date < high {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if self.is_working_day(date)? {
                count += 1;
            }
        }
        Ok(sign * count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn span(from: &str, to: &str) -> impl Iterator<Item = NaiveDate> {
        let last = d(to);
        d(from).iter_days().take_while(move |x| *x <= last)
    }

    /// The State Council's arrangements for 2025 (国办发明电〔2024〕12号) and 2026 (published
    /// 2025-11-04), as the shipped configuration lists them.
    fn china() -> Calendar {
        let y2025 = Year {
            year: 2025,
            holidays: [
                span("2025-01-01", "2025-01-01"),
                span("2025-01-28", "2025-02-04"),
                span("2025-04-04", "2025-04-06"),
                span("2025-05-01", "2025-05-05"),
                span("2025-05-31", "2025-06-02"),
                span("2025-10-01", "2025-10-08"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            make_up_workdays: ["2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11"].map(d).into(),
        };
        let y2026 = Year {
            year: 2026,
            holidays: [
                span("2026-01-01", "2026-01-03"),
                span("2026-02-15", "2026-02-23"),
                span("2026-04-04", "2026-04-06"),
                span("2026-05-01", "2026-05-05"),
                span("2026-06-19", "2026-06-21"),
                span("2026-09-25", "2026-09-27"),
                span("2026-10-01", "2026-10-07"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            make_up_workdays: ["2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"]
                .map(d)
                .into(),
        };
        Calendar::new([y2025, y2026]).unwrap()
    }

    // Each deadline below was counted by hand on a printed calendar; the comments list the
    // working days counted.
    #[test]
    fn ten_working_days_across_ordinary_weekends() {
        // Mon 3 Mar 2025: 4 5 6 7 | 10 11 12 13 14 | 17.
        assert_eq!(china().working_days_after(d("2025-03-03"), 10).unwrap(), d("2025-03-17"));
    }

    #[test]
    fn ten_working_days_across_spring_festival_with_its_make_up_days() {
        // Fri 24 Jan 2025: Sun 26 (make-up), Mon 27, [28 Jan - 4 Feb off], 5 6 7, Sat 8 (make-up),
        // 10 11 12 13.
        assert_eq!(china().working_days_after(d("2025-01-24"), 10).unwrap(), d("2025-02-13"));
        // Wed 11 Feb 2026: 12 13, Sat 14 (make-up), [15-23 off], 24 25 26 27, Sat 28 (make-up),
        // Mon 2 Mar, Tue 3 Mar.
        assert_eq!(china().working_days_after(d("2026-02-11"), 10).unwrap(), d("2026-03-03"));
    }

    #[test]
    fn ten_working_days_across_national_day_with_its_make_up_days() {
        // Thu 25 Sep 2025: 26, Sun 28 (make-up), 29 30, [1-8 Oct off], 9 10, Sat 11 (make-up),
        // 13 14 15.
        assert_eq!(china().working_days_after(d("2025-09-25"), 10).unwrap(), d("2025-10-15"));
        // Fri 18 Sep 2026: Sun 20 (make-up), 21 22 23 24, [25-27 Mid-Autumn off], 28 29 30,
        // [1-7 Oct off], Thu 8, Fri 9.
        assert_eq!(china().working_days_after(d("2026-09-18"), 10).unwrap(), d("2026-10-09"));
    }

    #[test]
    fn ten_working_days_across_labour_day() {
        // Thu 30 Apr 2026: [1-5 May off], 6 7 8, Sat 9 (make-up), 11 12 13 14 15, Mon 18.
        assert_eq!(china().working_days_after(d("2026-04-30"), 10).unwrap(), d("2026-05-18"));
    }

    #[test]
    fn days_are_classified_as_published() {
        let c = china();
        for (date, working) in [
            ("2025-01-26", true),  // Sunday, make-up
            ("2025-01-29", false), // Spring Festival weekday
            ("2025-10-11", true),  // Saturday, make-up
            ("2026-01-02", false), // Friday of the New Year holiday
            ("2026-01-04", true),  // Sunday, make-up
            ("2026-06-20", false), // Saturday
            ("2026-11-27", true),  // an ordinary Friday
        ] {
            assert_eq!(c.is_working_day(d(date)).unwrap(), working, "{date}");
        }
        assert_eq!(c.working_days_between(d("2025-01-24"), d("2025-02-13")).unwrap(), 10);
        assert_eq!(c.working_days_between(d("2025-02-13"), d("2025-01-24")).unwrap(), -10);
    }

    #[test]
    fn a_year_without_a_published_schedule_is_refused_not_guessed() {
        // Thu 24 Dec 2026: 25 28 29 30 31, then 2027, whose schedule the calendar lacks.
        let e = china().working_days_after(d("2026-12-24"), 10).unwrap_err();
        assert_eq!(e, CalendarError::NotCovered(2027));
        assert_eq!(china().working_days_after(d("2026-12-24"), 5).unwrap(), d("2026-12-31"));
    }

    #[test]
    fn inconsistent_schedules_are_refused() {
        let year = |holidays: &[&str], make_up: &[&str]| Year {
            year: 2025,
            holidays: holidays.iter().map(|s| d(s)).collect(),
            make_up_workdays: make_up.iter().map(|s| d(s)).collect(),
        };
        assert_eq!(Calendar::new([year(&["2025-01-26"], &["2025-01-26"])]), Err(CalendarError::Both(d("2025-01-26"))));
        assert_eq!(Calendar::new([year(&[], &["2025-01-27"])]), Err(CalendarError::MakeUpOnWeekday(d("2025-01-27"))));
        assert!(matches!(Calendar::new([year(&["2024-12-31"], &[])]), Err(CalendarError::WrongYear { .. })));
        assert_eq!(Calendar::new([year(&[], &[]), year(&[], &[])]), Err(CalendarError::DuplicateYear(2025)));
    }
}
