//! The lifecycles owners and users go through: applications for conditional data and
//! objections to published data. Each is a record and the transitions it may make; who may
//! make them is [`may_act_for`], when an application is due is the [`Calendar`]'s.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::agreement::AgreementStatus;
use crate::calendar::{Calendar, CalendarError, Counted};
use crate::catalog::DatasetId;

/// Working days an owner has to answer an application.
pub const ANSWER_WITHIN_WORKING_DAYS: u32 = 10;

/// Where an application stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationStatus {
    /// Waiting for the owner's answer.
    Submitted,
    /// Approved: an agreement was made from it.
    Approved,
    /// Rejected, with a reason.
    Rejected,
}

impl ApplicationStatus {
    pub const ALL: [ApplicationStatus; 3] =
        [ApplicationStatus::Submitted, ApplicationStatus::Approved, ApplicationStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationStatus::Submitted => "submitted",
            ApplicationStatus::Approved => "approved",
            ApplicationStatus::Rejected => "rejected",
        }
    }
}

/// A user's application for a conditionally open dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Application {
    pub id: String,
    /// The applying principal.
    pub applicant: String,
    pub dataset: DatasetId,
    /// What the data is for.
    pub purpose: String,
    /// Where and how it will be used.
    pub scenario: String,
    /// How the applicant will keep it safe.
    pub security_measures: String,
    /// The columns asked for.
    pub columns: Vec<String>,
    pub status: ApplicationStatus,
    pub submitted_at: DateTime<Utc>,
    /// The last day the owner may answer on: [`ANSWER_WITHIN_WORKING_DAYS`] working days after
    /// the day of submission, in the platform's time zone.
    pub due_by: NaiveDate,
    /// Whether `due_by` was counted on the statutory holidays alone for a year whose official
    /// arrangement is not published yet; it is counted again when it is.
    #[serde(default)]
    pub due_by_provisional: bool,
    /// The years `due_by` was counted provisionally in; empty when it is not provisional.
    #[serde(default)]
    pub due_by_provisional_years: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agreement an approval made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    /// Whether the owner has been reminded of the approaching deadline.
    #[serde(default)]
    pub reminded: bool,
}

/// Why a transition is not allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("already {0}")]
    AlreadyDecided(&'static str),
    #[error("a reason is required")]
    ReasonRequired,
    #[error("a response is required")]
    ResponseRequired,
    #[error("the agreement is revoked for good")]
    Revoked,
    #[error("only a suspended agreement resumes")]
    NotSuspended,
}

/// What an owner (or the operators) may do to an agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgreementAction {
    /// Pause it; it may resume.
    Suspend,
    Resume,
    /// End it for good.
    Revoke,
}

impl AgreementAction {
    /// The action named in a URL (`suspend`, `resume`, `revoke`).
    pub fn parse(name: &str) -> Option<AgreementAction> {
        match name {
            "suspend" => Some(AgreementAction::Suspend),
            "resume" => Some(AgreementAction::Resume),
            "revoke" => Some(AgreementAction::Revoke),
            _ => None,
        }
    }

    /// The status an agreement in `current` has after this action: a revoked agreement stays
    /// revoked, only a suspended one resumes.
    pub fn after(self, current: AgreementStatus) -> Result<AgreementStatus, TransitionError> {
        match (self, current) {
            (_, AgreementStatus::Revoked) => Err(TransitionError::Revoked),
            (AgreementAction::Suspend, _) => Ok(AgreementStatus::Suspended),
            (AgreementAction::Resume, AgreementStatus::Suspended) => Ok(AgreementStatus::Active),
            (AgreementAction::Resume, _) => Err(TransitionError::NotSuspended),
            (AgreementAction::Revoke, _) => Ok(AgreementStatus::Revoked),
        }
    }
}

/// Why a filer's contact details are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    #[error("an anonymous filer must leave a way to be reached (e-mail or telephone)")]
    Missing,
    #[error("at most {MAX_CONTACT_CHARS} characters")]
    TooLong,
}

/// Longest contact accepted.
pub const MAX_CONTACT_CHARS: usize = 200;

/// The contact of a report or objection: required of anonymous filers (whom the platform
/// cannot otherwise reach), optional with a key; blank counts as none.
pub fn contact(given: Option<&str>, anonymous: bool) -> Result<Option<String>, ContactError> {
    let contact = given.map(str::trim).filter(|c| !c.is_empty());
    match contact {
        None if anonymous => Err(ContactError::Missing),
        Some(c) if c.chars().count() > MAX_CONTACT_CHARS => Err(ContactError::TooLong),
        c => Ok(c.map(str::to_owned)),
    }
}

impl Application {
    /// The day an application submitted at `submitted` (a date in the platform's time zone) is
    /// due by, and the years counted provisionally on the way.
    pub fn due_date(calendar: &Calendar, submitted: NaiveDate) -> Result<Counted, CalendarError> {
        calendar.working_days_after(submitted, ANSWER_WITHIN_WORKING_DAYS)
    }

    /// Sets `due_by` and says whether and where it is provisional.
    pub fn set_due(&mut self, due: Counted) {
        self.due_by = due.date;
        self.due_by_provisional = due.is_provisional();
        self.due_by_provisional_years = due.provisional_years;
    }

    /// Counts the due day of an undecided application again, on `calendar`, if it was
    /// counted provisionally; `submitted` is the day of submission in the platform's time zone.
    /// Whether anything changed. A reminder already sent named the old day, so a moved due
    /// day is reminded of again.
    pub fn recount(&mut self, calendar: &Calendar, submitted: NaiveDate) -> Result<bool, CalendarError> {
        if self.status != ApplicationStatus::Submitted || !self.due_by_provisional {
            return Ok(false);
        }
        let due = Self::due_date(calendar, submitted)?;
        if due.date == self.due_by && due.provisional_years == self.due_by_provisional_years {
            return Ok(false);
        }
        if due.date != self.due_by {
            self.reminded = false;
        }
        self.set_due(due);
        Ok(true)
    }

    /// Whether the owner has let the deadline pass without answering, on `today` (a date in the
    /// platform's time zone).
    pub fn overdue(&self, today: NaiveDate) -> bool {
        self.status == ApplicationStatus::Submitted && self.past_due(today)
    }

    /// Whether `day` (a date in the platform's time zone) is past the last day the owner may
    /// answer on: an answer given that day is late, and an application unanswered that day
    /// was overdue.
    pub fn past_due(&self, day: NaiveDate) -> bool {
        day > self.due_by
    }

    /// Marks the application approved, as the agreement `agreement`.
    pub fn approve(&mut self, by: &str, at: DateTime<Utc>, agreement: String) -> Result<(), TransitionError> {
        self.pending()?;
        self.status = ApplicationStatus::Approved;
        self.decided_by = Some(by.to_owned());
        self.decided_at = Some(at);
        self.agreement = Some(agreement);
        Ok(())
    }

    /// Marks the application rejected; the reason is required.
    pub fn reject(&mut self, by: &str, at: DateTime<Utc>, reason: &str) -> Result<(), TransitionError> {
        self.pending()?;
        if reason.trim().is_empty() {
            return Err(TransitionError::ReasonRequired);
        }
        self.status = ApplicationStatus::Rejected;
        self.decided_by = Some(by.to_owned());
        self.decided_at = Some(at);
        self.reason = Some(reason.trim().to_owned());
        Ok(())
    }

    /// Checks it can still be decided.
    pub fn pending(&self) -> Result<(), TransitionError> {
        match self.status {
            ApplicationStatus::Submitted => Ok(()),
            other => Err(TransitionError::AlreadyDecided(other.as_str())),
        }
    }
}

/// Where an objection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectionStatus {
    Open,
    Resolved,
}

impl ObjectionStatus {
    pub const ALL: [ObjectionStatus; 2] = [ObjectionStatus::Open, ObjectionStatus::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectionStatus::Open => "open",
            ObjectionStatus::Resolved => "resolved",
        }
    }
}

/// An objection (异议) to a published dataset: an error or omission someone found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Objection {
    pub id: String,
    pub dataset: DatasetId,
    pub filed_at: DateTime<Utc>,
    /// What is wrong or missing.
    pub description: String,
    /// How to reach the filer; required of anonymous filers, shown only to the owner and the
    /// operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The filer's principal, when filed with a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub status: ObjectionStatus,
    /// The owner's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

impl Objection {
    /// The objection as a viewer sees it: the filer's contact only for those who answer for the
    /// dataset (its owner's department, the operators) and for the filer (`viewer`, a
    /// principal's id).
    pub fn seen_by(&self, answers_for_dataset: bool, viewer: Option<&str>) -> Objection {
        let mut shown = self.clone();
        let filer = viewer.is_some() && viewer == self.principal.as_deref();
        if !answers_for_dataset && !filer {
            shown.contact = None;
        }
        shown
    }

    /// Answers and closes the objection; the response is required.
    pub fn resolve(&mut self, by: &str, at: DateTime<Utc>, response: &str) -> Result<(), TransitionError> {
        if self.status == ObjectionStatus::Resolved {
            return Err(TransitionError::AlreadyDecided("resolved"));
        }
        if response.trim().is_empty() {
            return Err(TransitionError::ResponseRequired);
        }
        self.status = ObjectionStatus::Resolved;
        self.response = Some(response.trim().to_owned());
        self.resolved_at = Some(at);
        self.resolved_by = Some(by.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application() -> Application {
        Application {
            id: "ap-1".into(),
            applicant: "acme".into(),
            dataset: "enterprises".parse().unwrap(),
            purpose: "credit checks".into(),
            scenario: "internal".into(),
            security_measures: "encrypted at rest".into(),
            columns: vec!["name".into()],
            status: ApplicationStatus::Submitted,
            submitted_at: DateTime::UNIX_EPOCH,
            due_by: NaiveDate::from_ymd_opt(2026, 10, 14).unwrap(),
            due_by_provisional: false,
            due_by_provisional_years: vec![],
            decided_at: None,
            decided_by: None,
            reason: None,
            agreement: None,
            reminded: false,
        }
    }

    #[test]
    fn an_application_is_decided_once_and_rejection_needs_a_reason() {
        let mut a = application();
        assert_eq!(a.reject("owner", Utc::now(), "  "), Err(TransitionError::ReasonRequired));
        assert_eq!(a.status, ApplicationStatus::Submitted, "a refused transition changes nothing");
        a.approve("owner", Utc::now(), "ag-1".into()).unwrap();
        assert_eq!(a.agreement.as_deref(), Some("ag-1"));
        assert_eq!(a.reject("owner", Utc::now(), "late"), Err(TransitionError::AlreadyDecided("approved")));
        assert_eq!(a.status, ApplicationStatus::Approved);
    }

    #[test]
    fn overdue_means_unanswered_after_the_due_day() {
        let mut a = application();
        let due = a.due_by;
        assert!(!a.overdue(due));
        assert!(a.overdue(due.succ_opt().unwrap()));
        a.reject("owner", Utc::now(), "out of scope").unwrap();
        assert!(!a.overdue(due.succ_opt().unwrap()), "answered applications are never overdue");
        // An answer on the due day is in time; the day after, late.
        assert!(!a.past_due(due));
        assert!(a.past_due(due.succ_opt().unwrap()));
    }

    #[test]
    fn a_provisional_due_day_is_counted_again_once_the_year_is_published() {
        use crate::calendar::Year;
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let submitted = d("2026-12-28");
        let published_2026 = Year { year: 2026, ..Year::default() };
        let before = Calendar::new([published_2026.clone()]).unwrap();
        let mut a = application();
        a.set_due(Application::due_date(&before, submitted).unwrap());
        a.reminded = true;
        assert_eq!(
            (a.due_by, a.due_by_provisional, a.due_by_provisional_years.clone()),
            (d("2027-01-12"), true, vec![2027])
        );
        assert_eq!(a.recount(&before, submitted), Ok(false), "nothing new to count on");
        assert!(a.reminded);

        // 2027 published with 1 to 4 January off.
        let holidays = d("2027-01-01").iter_days().take(4).collect();
        let after = Calendar::new([published_2026, Year { year: 2027, holidays, ..Year::default() }]).unwrap();
        assert_eq!(a.recount(&after, submitted), Ok(true));
        assert_eq!(
            (a.due_by, a.due_by_provisional, a.due_by_provisional_years.clone()),
            (d("2027-01-13"), false, vec![])
        );
        assert!(!a.reminded, "the owner is reminded of the new day");
        assert_eq!(a.recount(&after, submitted), Ok(false), "an official due day stays as counted");

        // A decided application keeps the day it was decided against.
        let mut decided = application();
        decided.set_due(Application::due_date(&before, submitted).unwrap());
        decided.reject("owner", Utc::now(), "out of scope").unwrap();
        assert_eq!(decided.recount(&after, submitted), Ok(false));
        assert_eq!(decided.due_by, d("2027-01-12"));
    }

    #[test]
    fn agreements_suspend_resume_and_revoke_for_good() {
        use AgreementAction::*;
        use AgreementStatus::*;
        assert_eq!(Suspend.after(Active), Ok(Suspended));
        assert_eq!(Resume.after(Suspended), Ok(Active));
        assert_eq!(Resume.after(Active), Err(TransitionError::NotSuspended));
        assert_eq!(Revoke.after(Suspended), Ok(Revoked));
        for action in [Suspend, Resume, Revoke] {
            assert_eq!(action.after(Revoked), Err(TransitionError::Revoked));
        }
        assert_eq!(AgreementAction::parse("revoke"), Some(Revoke));
        assert_eq!(AgreementAction::parse("delete"), None);
    }

    #[test]
    fn anonymous_filers_leave_a_contact() {
        assert_eq!(contact(None, true), Err(ContactError::Missing));
        assert_eq!(contact(Some("  "), true), Err(ContactError::Missing));
        assert_eq!(contact(None, false), Ok(None));
        assert_eq!(contact(Some(" a@example.org "), true), Ok(Some("a@example.org".into())));
        assert_eq!(contact(Some(&"x".repeat(201)), false), Err(ContactError::TooLong));
    }

    #[test]
    fn objections_resolve_once_with_a_response() {
        let mut o = Objection {
            id: "ob-1".into(),
            dataset: "bus-arrivals".parse().unwrap(),
            filed_at: Utc::now(),
            description: "stop 12 is missing".into(),
            contact: Some("a@example.org".into()),
            principal: None,
            status: ObjectionStatus::Open,
            response: None,
            resolved_at: None,
            resolved_by: None,
        };
        let filed_by = |principal: Option<&str>| Objection { principal: principal.map(str::to_owned), ..o.clone() };
        let seen = |o: &Objection, answers, viewer| o.seen_by(answers, viewer).contact;
        assert_eq!(seen(&o, true, None), o.contact, "the owner and the operators see the contact");
        assert_eq!(seen(&o, false, None), None, "anonymous viewers do not");
        assert_eq!(seen(&filed_by(Some("acme")), false, Some("acme")), o.contact, "the filer does");
        assert_eq!(seen(&filed_by(Some("acme")), false, Some("other")), None, "another user does not");
        assert_eq!(seen(&filed_by(None), false, None), None, "an anonymous filing is nobody's to see");
        assert_eq!(o.resolve("owner", Utc::now(), ""), Err(TransitionError::ResponseRequired));
        o.resolve("owner", Utc::now(), "added in today's release").unwrap();
        assert_eq!(o.status, ObjectionStatus::Resolved);
        assert_eq!(o.resolve("owner", Utc::now(), "again"), Err(TransitionError::AlreadyDecided("resolved")));
    }
}
