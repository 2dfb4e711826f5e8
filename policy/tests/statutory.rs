//! The provisional calendar's statutory holidays for 2027-2035 against an independent source:
//! the table `data/holidays-china-2027-2035.txt`, which the PyPI package `holidays` 0.108
//! computes (`holidays.China`, with its own lunar and solar-term tables and its own rule for
//! days given back). `tests/interop/china_holidays.py` writes the table, and `.ci/run` checks
//! it is still what the pinned package computes.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use policy::statutory::{arrangement, festival_dates, Festival};

const TABLE: &str = include_str!("data/holidays-china-2027-2035.txt");

/// One line of the table: date, `statutory` or `given_back`, festival key.
struct Row {
    date: NaiveDate,
    given_back: bool,
    key: &'static str,
}

fn rows() -> Vec<Row> {
    assert!(TABLE.starts_with("# China's public holidays 2027-2035 as the PyPI package holidays==0.108"));
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            let [date, kind, key] = fields[..] else { panic!("bad line `{line}`") };
            assert!(kind == "statutory" || kind == "given_back", "bad line `{line}`");
            Row { date: date.parse().unwrap(), given_back: kind == "given_back", key }
        })
        .collect()
}

fn festival(key: &str) -> Festival {
    match key {
        "new_years_day" => Festival::NewYearsDay,
        "lunar_new_years_eve" | "spring_festival" => Festival::SpringFestival,
        "qingming" => Festival::Qingming,
        "labour_day" => Festival::LabourDay,
        "dragon_boat" => Festival::DragonBoat,
        "mid_autumn" => Festival::MidAutumn,
        "national_day" => Festival::NationalDay,
        other => panic!("unknown festival `{other}`"),
    }
}

const YEARS: std::ops::RangeInclusive<i32> = 2027..=2035;

#[test]
fn lunar_new_year_dragon_boat_mid_autumn_and_qingming_2027_to_2035_match_the_holidays_package() {
    let rows = rows();
    for year in YEARS {
        let in_year = |key: &str| -> Vec<NaiveDate> {
            rows.iter()
                .filter(|r| !r.given_back && r.key == key && r.date.format("%Y").to_string() == year.to_string())
                .map(|r| r.date)
                .collect()
        };
        let ours = festival_dates(year).unwrap();
        // The lunar new year is the first of the three Spring Festival days after the eve.
        assert_eq!(Some(&ours.lunar_new_year), in_year("spring_festival").first(), "{year} lunar new year");
        assert_eq!(in_year("lunar_new_years_eve"), [ours.lunar_new_year.pred_opt().unwrap()], "{year} eve");
        assert_eq!(in_year("qingming"), [ours.qingming], "{year} Qingming");
        assert_eq!(in_year("dragon_boat"), [ours.dragon_boat], "{year} Dragon Boat");
        assert_eq!(in_year("mid_autumn"), [ours.mid_autumn], "{year} Mid-Autumn");
    }
}

#[test]
fn provisional_holidays_and_their_given_back_days_2027_to_2035_match_the_holidays_package() {
    let rows = rows();
    for year in YEARS {
        let theirs = |given_back: bool| -> BTreeSet<(NaiveDate, Festival)> {
            rows.iter()
                .filter(|r| r.given_back == given_back && r.date.format("%Y").to_string() == year.to_string())
                .map(|r| (r.date, festival(r.key)))
                .collect()
        };
        let ours = arrangement(year).unwrap();
        let statutory: BTreeSet<(NaiveDate, Festival)> = ours.statutory.iter().map(|h| (h.date, h.festival)).collect();
        let given_back: BTreeSet<(NaiveDate, Festival)> =
            ours.given_back.iter().map(|h| (h.date, h.festival)).collect();
        assert_eq!(statutory, theirs(false), "{year} statutory days");
        assert_eq!(given_back, theirs(true), "{year} given-back days");
        assert_eq!(ours.given_back.len(), theirs(true).len(), "{year}: one given-back day per weekend holiday");
    }
    // The table is not empty of the cases that matter: weekends given back in most years.
    assert!(rows.iter().filter(|r| r.given_back).count() >= 30);
}
