//! Properties of the workflow permissions, over arbitrary actors, actions and records.

use policy::{authorize, Action, Actor, Denial, Principal, Resource, Role};
use proptest::prelude::*;

const DEPARTMENTS: [&str; 3] = ["Transport Bureau", "Market Regulation", "Health Commission"];
const PRINCIPALS: [&str; 3] = ["acme", "beta", "gamma"];

fn department() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![Just(None), proptest::sample::select(DEPARTMENTS.to_vec()).prop_map(Some)]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        Just(Actor::Operator),
        (
            proptest::sample::select(PRINCIPALS.to_vec()),
            prop_oneof![Just(Role::User), Just(Role::Owner), Just(Role::Operator)],
            department(),
        )
            .prop_map(|(id, role, department)| Actor::Principal(Principal {
                id: id.into(),
                name: id.into(),
                role,
                department: department.map(str::to_owned),
            })),
    ]
}

/// A record as the rules see it, with its owning departments.
#[derive(Clone, Debug)]
enum Record {
    Workflow,
    Dataset(Option<&'static str>),
    Application(&'static str, Option<&'static str>),
    Agreement(&'static str, Vec<Option<&'static str>>),
}

impl Record {
    fn owners(&self) -> Vec<Option<&'static str>> {
        match self {
            Record::Workflow => vec![],
            Record::Dataset(o) | Record::Application(_, o) => vec![*o],
            Record::Agreement(_, owners) => owners.clone(),
        }
    }
}

fn record() -> impl Strategy<Value = Record> {
    let principal = || proptest::sample::select(PRINCIPALS.to_vec());
    prop_oneof![
        Just(Record::Workflow),
        department().prop_map(Record::Dataset),
        (principal(), department()).prop_map(|(a, o)| Record::Application(a, o)),
        (principal(), proptest::collection::vec(department(), 1..4)).prop_map(|(h, o)| Record::Agreement(h, o)),
    ]
}

fn check(actor: &Actor, action: Action, record: &Record) -> Result<policy::Permit, Denial> {
    let owners = record.owners();
    let resource = match record {
        Record::Workflow => Resource::Workflow,
        Record::Dataset(o) => Resource::Dataset { owner: *o },
        Record::Application(applicant, o) => Resource::Application { applicant, owner: *o },
        Record::Agreement(holder, _) => Resource::Agreement { holder, owners: &owners },
    };
    authorize(actor, action, resource)
}

/// Whether `action` is one done on records of `record`'s kind (every action may be asked of the
/// workflow as such, before a record is read).
fn applies(action: Action, record: &Record) -> bool {
    match record {
        Record::Workflow => true,
        Record::Dataset(_) => matches!(
            action,
            Action::WriteDraft
                | Action::ReadDraft
                | Action::Withdraw
                | Action::Reopen
                | Action::ListObjections
                | Action::SeeObjectionFiler
                | Action::Resolve
        ),
        Record::Application(..) => matches!(action, Action::ReadApplication | Action::Decide),
        Record::Agreement(..) => matches!(action, Action::ReadAgreement | Action::ChangeAgreement),
    }
}

fn role(actor: &Actor) -> Role {
    match actor {
        Actor::Operator => Role::Operator,
        Actor::Principal(p) => p.role,
    }
}

/// Whether the actor acts for a department's data: an owner of that department, or an operator.
fn acts_for(actor: &Actor, department: Option<&str>) -> bool {
    match actor {
        Actor::Operator => true,
        Actor::Principal(p) => match p.role {
            Role::Operator => true,
            Role::Owner => department.is_some() && p.department.as_deref() == department,
            Role::User => false,
        },
    }
}

fn user() -> impl Strategy<Value = Actor> {
    actor().prop_map(|actor| match actor {
        Actor::Operator => {
            Actor::Principal(Principal { id: "acme".into(), name: "acme".into(), role: Role::User, department: None })
        }
        Actor::Principal(p) => Actor::Principal(Principal { role: Role::User, ..p }),
    })
}

/// The actions done on records of `record`'s kind.
fn actions_on(record: &Record) -> impl Iterator<Item = Action> + '_ {
    Action::ALL.into_iter().filter(move |a| applies(*a, record))
}

proptest! {
    #[test]
    fn only_users_apply(actor in actor(), record in record()) {
        prop_assert_eq!(check(&actor, Action::Apply, &record).is_ok(), role(&actor) == Role::User);
    }

    #[test]
    fn only_the_operators_publish(actor in actor(), record in record()) {
        prop_assert_eq!(check(&actor, Action::Publish, &record).is_ok(), role(&actor) == Role::Operator);
    }

    #[test]
    fn the_operators_may_do_everything_but_apply(actor in actor(), record in record()) {
        prop_assume!(role(&actor) == Role::Operator);
        for action in Action::ALL.into_iter().filter(|a| *a != Action::Apply) {
            prop_assert!(check(&actor, action, &record).is_ok(), "{:?} on {:?}", action, record);
        }
    }

    /// Users never publish, decide, resolve, suspend, withdraw, draft or list objections, on any
    /// record.
    #[test]
    fn users_never_do_an_owners_work(user in user(), record in record()) {
        for action in Action::ALL.into_iter().filter(|a| a.is_owners()) {
            // Asked before any record is read, reading a draft or an objection's filer is
            // decided on the record (where it is refused to users, below).
            if matches!(record, Record::Workflow) && matches!(action, Action::ReadDraft | Action::SeeObjectionFiler) {
                continue;
            }
            prop_assert!(check(&user, action, &record).is_err(), "{:?} on {:?}", action, record);
        }
    }

    /// Of the applications and agreements, a user reads its own alone.
    #[test]
    fn users_read_only_their_own(user in user(), record in record()) {
        let own = match &record {
            Record::Application(applicant, _) => user.principal_id() == Some(*applicant),
            Record::Agreement(holder, _) => user.principal_id() == Some(*holder),
            _ => return Ok(()),
        };
        for action in actions_on(&record).filter(|a| !a.is_owners()) {
            prop_assert_eq!(check(&user, action, &record).is_ok(), own, "{:?} on {:?}", action, record);
        }
    }

    /// On a record, an owner's work is allowed exactly to those who act for every department the
    /// record touches.
    #[test]
    fn owners_act_for_their_department_alone(actor in actor(), record in record()) {
        prop_assume!(!matches!(record, Record::Workflow));
        let every = record.owners().iter().all(|o| acts_for(&actor, *o));
        for action in actions_on(&record).filter(|a| a.is_owners()) {
            prop_assert_eq!(check(&actor, action, &record).is_ok(), every, "{:?} on {:?}", action, record);
        }
    }

    /// A record the actor has nothing to do with is never confirmed by a refusal that differs from
    /// a missing one: refusals on other people's applications and agreements, and on another
    /// department's drafts, are Hidden, whatever the role (a user asking an owner's action on an
    /// application or agreement is refused for its role, before any record is read).
    #[test]
    fn refusals_do_not_reveal_other_peoples_records(actor in actor(), record in record()) {
        let strangers = record.owners().iter().all(|o| !acts_for(&actor, *o));
        for action in actions_on(&record) {
            if role(&actor) == Role::User && action.is_owners() && !matches!(action, Action::ReadDraft) {
                continue;
            }
            let unrelated = strangers
                && match &record {
                    Record::Application(a, _) | Record::Agreement(a, _) => actor.principal_id() != Some(*a),
                    Record::Dataset(_) => action == Action::ReadDraft,
                    Record::Workflow => false,
                };
            if unrelated {
                prop_assert_eq!(check(&actor, action, &record).err(), Some(Denial::Hidden), "{:?} on {:?}", action, record);
            }
        }
    }

    /// The check before a record is read is never stricter than the check on the record: what
    /// some record permits, the workflow permits.
    #[test]
    fn the_workflow_gate_is_never_stricter_than_a_record(actor in actor(), record in record()) {
        for action in Action::ALL {
            if check(&actor, action, &record).is_ok() {
                prop_assert!(check(&actor, action, &Record::Workflow).is_ok(), "{:?} on {:?}", action, record);
            }
        }
    }
}
