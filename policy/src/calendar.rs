//! The working-day calendar behind the owners' 10-working-day deadline.
//!
//! A day is a working day when it is a weekday and not a public holiday, or when it is a
//! make-up working day (调休上班) moved onto a weekend. The holidays and make-up days of each
//! year are data: the State Council publishes them each autumn for the next year, and a
//! [`Year`] holds one such official arrangement.
//!
//! A year without an official arrangement is counted provisionally on the statutory holidays
//! alone ([`crate::statutory`]): the days the law gives off, the days given back for those on a
//! weekend, no make-up working days. That is a deadline a few days uncertain, which is better
//! than refusing the application; a count says which years it took provisionally
//! ([`Counted::provisional_years`]), so it can be counted again once the year is published.
//! Years the statutory rule does not reach (before 2025, after 2100) are refused, not guessed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Weekday};

use crate::statutory;

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
    #[error(
        "the working-day calendar cannot count days in {0}: no arrangement is published for it, and the statutory \
         holidays are computed for {first} to {last} only",
        first = statutory::FIRST_YEAR,
        last = statutory::LAST_YEAR
    )]
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

impl CalendarError {
    /// The day the error is about, if it is about one.
    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            CalendarError::WrongYear { date, .. }
            | CalendarError::Both(date)
            | CalendarError::MakeUpOnWeekday(date) => Some(*date),
            CalendarError::NotCovered(_) | CalendarError::DuplicateYear(_) => None,
        }
    }
}

fn weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl Year {
    /// Checks the arrangement: its days in its own year, no day both off and worked, make-up
    /// days on weekends only.
    pub fn check(&self) -> Result<(), CalendarError> {
        for &date in self.holidays.iter().chain(&self.make_up_workdays) {
            if date.year() != self.year {
                return Err(CalendarError::WrongYear { date, year: self.year });
            }
        }
        if let Some(&date) = self.holidays.intersection(&self.make_up_workdays).next() {
            return Err(CalendarError::Both(date));
        }
        if let Some(&date) = self.make_up_workdays.iter().find(|d| !weekend(**d)) {
            return Err(CalendarError::MakeUpOnWeekday(date));
        }
        Ok(())
    }

    /// The statutory days this arrangement makes working days: none in a published notice,
    /// which always gives them off, so any is a mistake in the file. Empty for years the
    /// statutory rule does not reach.
    pub fn statutory_days_worked(&self) -> Vec<statutory::Holiday> {
        let Ok(statutory) = statutory::arrangement(self.year) else { return Vec::new() };
        statutory.statutory.into_iter().filter(|h| !self.is_day_off(h.date)).collect()
    }

    fn is_day_off(&self, date: NaiveDate) -> bool {
        !self.make_up_workdays.contains(&date) && (weekend(date) || self.holidays.contains(&date))
    }

    /// The year as the statutory rule alone has it: its holidays and given-back days off, no
    /// make-up working days.
    pub fn provisional(year: i32) -> Result<Year, CalendarError> {
        let arrangement = statutory::arrangement(year)?;
        Ok(Year { year, holidays: arrangement.days_off(), make_up_workdays: BTreeSet::new() })
    }
}

/// A day reached by counting working days, and the years counted on the statutory holidays
/// alone because their arrangement is not published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub date: NaiveDate,
    /// In ascending order; empty when every day counted was on an official arrangement.
    pub provisional_years: Vec<i32>,
}

impl Counted {
    /// Whether any year was counted provisionally.
    pub fn is_provisional(&self) -> bool {
        !self.provisional_years.is_empty()
    }
}

/// Working days on the official arrangements it holds, and on the statutory holidays for the
/// other years from 2025 to 2100.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    official: BTreeMap<i32, Year>,
}

/// Walks days in order, holding the arrangement of the year it is in.
struct Walk<'a> {
    calendar: &'a Calendar,
    provisional: Option<Year>,
    provisional_years: BTreeSet<i32>,
}

impl<'a> Walk<'a> {
    fn new(calendar: &'a Calendar) -> Walk<'a> {
        Walk { calendar, provisional: None, provisional_years: BTreeSet::new() }
    }

    fn is_working_day(&mut self, date: NaiveDate) -> Result<bool, CalendarError> {
        let year = match self.calendar.official.get(&date.year()) {
            Some(official) => official,
            None => {
                if self.provisional.as_ref().is_none_or(|y| y.year != date.year()) {
                    self.provisional = Some(Year::provisional(date.year())?);
                }
                self.provisional_years.insert(date.year());
                self.provisional.as_ref().expect("just set")
            }
        };
        Ok(!year.is_day_off(date))
    }
}

impl Calendar {
    /// A calendar of these official arrangements, each checked ([`Year::check`]).
    pub fn new(years: impl IntoIterator<Item = Year>) -> Result<Calendar, CalendarError> {
        let mut official = BTreeMap::new();
        for year in years {
            year.check()?;
            if official.contains_key(&year.year) {
                return Err(CalendarError::DuplicateYear(year.year));
            }
            official.insert(year.year, year);
        }
        Ok(Calendar { official })
    }

    /// The years with an official arrangement.
    pub fn official_years(&self) -> impl Iterator<Item = i32> + '_ {
        self.official.keys().copied()
    }

    /// The official arrangements.
    pub fn official(&self) -> impl Iterator<Item = &Year> {
        self.official.values()
    }

    /// The years counted on the statutory holidays: those from 2025 to 2100 without an
    /// official arrangement.
    pub fn provisional_years(&self) -> impl Iterator<Item = i32> + '_ {
        (statutory::FIRST_YEAR..=statutory::LAST_YEAR).filter(|y| !self.official.contains_key(y))
    }

    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        Walk::new(self).is_working_day(date)
    }

    /// The `n`-th working day after `start` (not counting `start` itself): an application
    /// submitted on `start` is due by the end of this day.
    pub fn working_days_after(&self, start: NaiveDate, n: u32) -> Result<Counted, CalendarError> {
        let mut walk = Walk::new(self);
        let mut date = start;
        let mut counted = 0;
        while counted < n {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if walk.is_working_day(date)? {
                counted += 1;
            }
        }
        Ok(Counted { date, provisional_years: walk.provisional_years.into_iter().collect() })
    }

    /// Working days from `from` (exclusive) to `to` (inclusive); negative when `to` is earlier.
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<i64, CalendarError> {
        let (low, high, sign) = if to >= from { (from, to, 1) } else { (to, from, -1) };
        let mut walk = Walk::new(self);
        let mut count = 0;
        let mut date = low;
        while date < high {
            date = date.succ_opt().ok_or(CalendarError::NotCovered(i32::MAX))?;
            if walk.is_working_day(date)? {
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
        assert_eq!(china().working_days_after(d("2025-03-03"), 10).unwrap().date, d("2025-03-17"));
    }

    #[test]
    fn ten_working_days_across_spring_festival_with_its_make_up_days() {
        // Fri 24 Jan 2025: Sun 26 (make-up), Mon 27, [28 Jan - 4 Feb off], 5 6 7, Sat 8 (make-up),
        // 10 11 12 13.
        assert_eq!(china().working_days_after(d("2025-01-24"), 10).unwrap().date, d("2025-02-13"));
        // Wed 11 Feb 2026: 12 13, Sat 14 (make-up), [15-23 off], 24 25 26 27, Sat 28 (make-up),
        // Mon 2 Mar, Tue 3 Mar.
        assert_eq!(china().working_days_after(d("2026-02-11"), 10).unwrap().date, d("2026-03-03"));
    }

    #[test]
    fn ten_working_days_across_national_day_with_its_make_up_days() {
        // Thu 25 Sep 2025: 26, Sun 28 (make-up), 29 30, [1-8 Oct off], 9 10, Sat 11 (make-up),
        // 13 14 15.
        assert_eq!(china().working_days_after(d("2025-09-25"), 10).unwrap().date, d("2025-10-15"));
        // Fri 18 Sep 2026: Sun 20 (make-up), 21 22 23 24, [25-27 Mid-Autumn off], 28 29 30,
        // [1-7 Oct off], Thu 8, Fri 9.
        assert_eq!(china().working_days_after(d("2026-09-18"), 10).unwrap().date, d("2026-10-09"));
    }

    #[test]
    fn ten_working_days_across_labour_day() {
        // Thu 30 Apr 2026: [1-5 May off], 6 7 8, Sat 9 (make-up), 11 12 13 14 15, Mon 18.
        assert_eq!(china().working_days_after(d("2026-04-30"), 10).unwrap().date, d("2026-05-18"));
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
    fn a_year_without_a_published_arrangement_is_counted_on_the_statutory_holidays() {
        // Mon 28 Dec 2026: 29 30 31, [Fri 1 Jan 2027 New Year's Day], 4 5 6 7 8 | 11 12.
        let due = china().working_days_after(d("2026-12-28"), 10).unwrap();
        assert_eq!(due, Counted { date: d("2027-01-12"), provisional_years: vec![2027] });
        assert!(due.is_provisional());
        // Within the published years, nothing is provisional.
        let due = china().working_days_after(d("2026-12-10"), 10).unwrap();
        assert_eq!(due, Counted { date: d("2026-12-24"), provisional_years: vec![] });
        // Spring Festival 2027 by the statutory rule: Fri 5 Feb (eve) to Mon 8 Feb, and the
        // Saturday and Sunday among them given back on Tue 9 and Wed 10 Feb. Wed 3 Feb: 4,
        // [5-10 off], 11 12 | 15 16 17 18 19 | 22 23.
        assert_eq!(china().working_days_after(d("2027-02-03"), 10).unwrap().date, d("2027-02-23"));
        assert_eq!(china().provisional_years().next(), Some(2027));
        assert_eq!(china().provisional_years().count(), 2100 - 2027 + 1);
    }

    #[test]
    fn adding_the_official_year_replaces_the_provisional_count() {
        let mut years: Vec<Year> = china().official().cloned().collect();
        // An arrangement that gives 1 to 4 January 2027 off: one day more than the statute.
        years.push(Year { year: 2027, holidays: span("2027-01-01", "2027-01-04").collect(), ..Year::default() });
        let calendar = Calendar::new(years).unwrap();
        let due = calendar.working_days_after(d("2026-12-28"), 10).unwrap();
        assert_eq!(due, Counted { date: d("2027-01-13"), provisional_years: vec![] });
    }

    #[test]
    fn a_year_the_statutory_rule_does_not_reach_is_refused_not_guessed() {
        // The amended measures apply from 2025; 2024 had other ones.
        assert_eq!(china().working_days_after(d("2024-12-20"), 10), Err(CalendarError::NotCovered(2024)));
        assert_eq!(china().working_days_after(d("2025-01-02"), 10).unwrap().date, d("2025-01-16"));
        assert_eq!(china().working_days_after(d("2100-12-24"), 10), Err(CalendarError::NotCovered(2101)));
    }

    #[test]
    fn the_statutory_rule_gives_the_statutory_days_of_the_published_arrangements() {
        // Each statutory day of 2025 and 2026 (computed: lunar dates, Qingming) is a day off in
        // the State Council's notice: the provisional calendar never calls a statutory holiday
        // a working day.
        for year in china().official() {
            assert_eq!(year.statutory_days_worked(), vec![], "{}", year.year);
        }
        // And a file that forgot one is caught.
        let mut forgot = china().official().next().unwrap().clone();
        forgot.holidays.remove(&d("2025-05-02"));
        let worked: Vec<NaiveDate> = forgot.statutory_days_worked().iter().map(|h| h.date).collect();
        assert_eq!(worked, vec![d("2025-05-02")]);
    }

    #[test]
    fn the_provisional_calendar_never_works_on_a_statutory_holiday() {
        let calendar = Calendar::default();
        for year in crate::statutory::FIRST_YEAR..=crate::statutory::LAST_YEAR {
            for holiday in crate::statutory::arrangement(year).unwrap().statutory {
                assert_eq!(calendar.is_working_day(holiday.date), Ok(false), "{holiday:?}");
            }
        }
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
