//! The statutory public holidays of mainland China, computed for a year whose arrangement the
//! State Council has not published yet.
//!
//! The national measures on public holidays (全国年节及纪念日放假办法, as amended by State
//! Council order No. 795, in force from 2025) give every citizen these days off: New Year's
//! Day (1 January); Spring Festival, 4 days: the lunar new year's eve and the first three days
//! of the lunar year; Qingming, the day of the solar term; Labour Day, 1 and 2 May; the Dragon
//! Boat Festival, the 5th of the 5th lunar month; the Mid-Autumn Festival, the 15th of the 8th
//! lunar month; National Day, 1 to 3 October. A holiday for all citizens that falls on a
//! Saturday or Sunday is given back (补假) on a working day: here, as the measures are applied
//! each year, the first following weekday that is not itself a holiday, one for each holiday
//! that fell on the weekend (two holidays on one weekend day give back two days; two on one
//! weekday give back none, the measures say nothing of that case).
//!
//! What only the yearly notice sets is left out: weekend days worked in exchange for longer
//! breaks (调休上班), and the bridging days those buy. An [`Arrangement`] is therefore what the
//! law guarantees, the floor of every published arrangement.
//!
//! Lunar dates and the Qingming solar term come from the `tyme4rs` crate, which computes both
//! astronomically (the 寿星天文历 algorithms) for Beijing time.
//!
//! ```
//! use policy::statutory::{arrangement, Festival};
//! let a = arrangement(2027).unwrap();
//! let eve = a.statutory.iter().find(|h| h.festival == Festival::SpringFestival).unwrap();
//! assert_eq!(eve.date.to_string(), "2027-02-05");
//! // Its 2nd and 3rd days are a Saturday and a Sunday: given back on Tuesday and Wednesday.
//! let back: Vec<String> = a.given_back.iter().map(|h| h.date.to_string()).collect();
//! assert!(back.contains(&"2027-02-09".to_owned()) && back.contains(&"2027-02-10".to_owned()));
//! ```

use std::collections::BTreeSet;
use std::fmt;

use chrono::{Datelike, NaiveDate, Weekday};
use tyme4rs::tyme::lunar::LunarDay;
use tyme4rs::tyme::solar::{SolarDay, SolarTerm};

use crate::calendar::CalendarError;

/// The first year the amended measures (4-day Spring Festival, 2-day Labour Day) apply to.
pub const FIRST_YEAR: i32 = 2025;

/// The last year computed: the lunar tables the computation is checked against (those of the
/// `holidays` package, and most published ones) end with 2100.
pub const LAST_YEAR: i32 = 2100;

/// A public holiday of the national measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Festival {
    NewYearsDay,
    SpringFestival,
    Qingming,
    LabourDay,
    DragonBoat,
    MidAutumn,
    NationalDay,
}

impl Festival {
    /// Its name in English and Chinese.
    pub fn name(self) -> &'static str {
        match self {
            Festival::NewYearsDay => "New Year's Day (元旦)",
            Festival::SpringFestival => "Spring Festival (春节)",
            Festival::Qingming => "Qingming (清明节)",
            Festival::LabourDay => "Labour Day (劳动节)",
            Festival::DragonBoat => "Dragon Boat Festival (端午节)",
            Festival::MidAutumn => "Mid-Autumn Festival (中秋节)",
            Festival::NationalDay => "National Day (国庆节)",
        }
    }
}

impl fmt::Display for Festival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One day off and the holiday it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holiday {
    pub date: NaiveDate,
    pub festival: Festival,
}

/// A year's days off by the measures alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrangement {
    pub year: i32,
    /// The statutory days, in date order; a day two holidays share is listed for each.
    pub statutory: Vec<Holiday>,
    /// The weekdays given back for statutory days on a weekend, each with the holiday it
    /// replaces, in date order.
    pub given_back: Vec<Holiday>,
}

impl Arrangement {
    /// Every day off: the statutory days and the days given back (weekends aside).
    pub fn days_off(&self) -> BTreeSet<NaiveDate> {
        self.statutory.iter().chain(&self.given_back).map(|h| h.date).collect()
    }
}

/// The lunar new year's day, the Dragon Boat and Mid-Autumn festivals and Qingming of `year`,
/// as Gregorian dates in Beijing time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FestivalDates {
    pub lunar_new_year: NaiveDate,
    pub qingming: NaiveDate,
    pub dragon_boat: NaiveDate,
    pub mid_autumn: NaiveDate,
}

fn in_range(year: i32) -> Result<(), CalendarError> {
    if (FIRST_YEAR..=LAST_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(CalendarError::NotCovered(year))
    }
}

fn gregorian(day: &SolarDay, year: i32) -> Result<NaiveDate, CalendarError> {
    let (y, m, d) = (day.get_year(), day.get_month(), day.get_day());
    let (Ok(y), Ok(m), Ok(d)) = (i32::try_from(y), u32::try_from(m), u32::try_from(d)) else {
        return Err(CalendarError::NotCovered(year));
    };
    NaiveDate::from_ymd_opt(y, m, d).ok_or(CalendarError::NotCovered(year))
}

/// The dates of the festivals that move, for a year from [`FIRST_YEAR`] to [`LAST_YEAR`].
pub fn festival_dates(year: i32) -> Result<FestivalDates, CalendarError> {
    in_range(year)?;
    let lunar = |month: isize, day: usize| -> Result<NaiveDate, CalendarError> {
        let day = LunarDay::new(year as isize, month, day).map_err(|_| CalendarError::NotCovered(year))?;
        gregorian(&day.get_solar_day(), year)
    };
    let qingming = SolarTerm::new(year as isize, "清明").map_err(|_| CalendarError::NotCovered(year))?;
    Ok(FestivalDates {
        lunar_new_year: lunar(1, 1)?,
        qingming: gregorian(&qingming.get_solar_day(), year)?,
        dragon_boat: lunar(5, 5)?,
        mid_autumn: lunar(8, 15)?,
    })
}

fn weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The statutory days off of `year` and the days given back for those on a weekend.
pub fn arrangement(year: i32) -> Result<Arrangement, CalendarError> {
    let dates = festival_dates(year)?;
    let day = |month, day| NaiveDate::from_ymd_opt(year, month, day).expect("a fixed date of the year");
    let holiday = |date, festival| Holiday { date, festival };
    let mut statutory = vec![
        holiday(day(1, 1), Festival::NewYearsDay),
        holiday(dates.qingming, Festival::Qingming),
        holiday(day(5, 1), Festival::LabourDay),
        holiday(day(5, 2), Festival::LabourDay),
        holiday(dates.dragon_boat, Festival::DragonBoat),
        holiday(dates.mid_autumn, Festival::MidAutumn),
        holiday(day(10, 1), Festival::NationalDay),
        holiday(day(10, 2), Festival::NationalDay),
        holiday(day(10, 3), Festival::NationalDay),
    ];
    let eve = dates.lunar_new_year.pred_opt().expect("not the first day of time");
    statutory.extend(eve.iter_days().take(4).map(|d| holiday(d, Festival::SpringFestival)));
    statutory.sort();

    let mut off: BTreeSet<NaiveDate> = statutory.iter().map(|h| h.date).collect();
    let mut given_back = Vec::new();
    for h in statutory.iter().filter(|h| weekend(h.date)) {
        let back = h.date.iter_days().skip(1).find(|d| !weekend(*d) && !off.contains(d)).expect("days go on");
        off.insert(back);
        given_back.push(holiday(back, h.festival));
    }
    given_back.sort();
    Ok(Arrangement { year, statutory, given_back })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn the_festivals_of_2025_and_2026_fall_on_their_published_days() {
        // The State Council's notices for 2025 and 2026 name these days.
        let y2025 = festival_dates(2025).unwrap();
        assert_eq!(
            (y2025.lunar_new_year, y2025.qingming, y2025.dragon_boat, y2025.mid_autumn),
            (d("2025-01-29"), d("2025-04-04"), d("2025-05-31"), d("2025-10-06"))
        );
        let y2026 = festival_dates(2026).unwrap();
        assert_eq!(
            (y2026.lunar_new_year, y2026.qingming, y2026.dragon_boat, y2026.mid_autumn),
            (d("2026-02-17"), d("2026-04-05"), d("2026-06-19"), d("2026-09-25"))
        );
    }

    #[test]
    fn the_measures_give_thirteen_days_each_year() {
        for year in FIRST_YEAR..=LAST_YEAR {
            let a = arrangement(year).unwrap();
            assert_eq!(a.statutory.len(), 13, "{year}");
            assert!(a.statutory.iter().chain(&a.given_back).all(|h| h.date.year() == year), "{year}");
        }
    }

    #[test]
    fn a_holiday_on_a_weekend_is_given_back_on_the_next_free_weekday() {
        // 2028: New Year's Day is a Saturday, given back on Monday 3 January; Dragon Boat is a
        // Sunday (28 May), given back on Monday 29 May; National Day starts on a Sunday and
        // Mid-Autumn shares its Tuesday, 3 October: one day back, Wednesday 4 October.
        let a = arrangement(2028).unwrap();
        let back: Vec<(String, Festival)> = a.given_back.iter().map(|h| (h.date.to_string(), h.festival)).collect();
        assert_eq!(
            back,
            vec![
                ("2028-01-03".to_owned(), Festival::NewYearsDay),
                ("2028-05-29".to_owned(), Festival::DragonBoat),
                ("2028-10-04".to_owned(), Festival::NationalDay),
            ]
        );
        // 2033: the lunar new year's eve is a Sunday and the three days after it are holidays
        // too, so it is given back on Thursday 3 February.
        let a = arrangement(2033).unwrap();
        assert!(a.given_back.contains(&Holiday { date: d("2033-02-03"), festival: Festival::SpringFestival }));
    }

    #[test]
    fn years_before_the_amended_measures_or_past_the_tables_are_not_computed() {
        assert_eq!(arrangement(2024), Err(CalendarError::NotCovered(2024)));
        assert_eq!(arrangement(2101), Err(CalendarError::NotCovered(2101)));
    }
}
