//! Who may do what in the platform's workflows: write and publish catalog entries, withdraw and
//! reopen datasets, apply, decide applications, change agreements, answer objections, and read
//! each of these records.
//!
//! The regulation gives each workflow to a role. Users apply, and read their own applications and
//! agreements. Owners (principals of a department) draft their department's entries, decide the
//! applications for its datasets, change the agreements on them, answer the objections to them,
//! and withdraw and reopen them. The operators review and publish drafts and may act for every
//! department. [`authorize`] is that rule, whole: the gateway asks it before each workflow action
//! and does nothing it refuses.
//!
//! A refusal says how it must be answered. Where the actor's role could never do the action, it
//! is [`Denial::WrongRole`] (403). Where telling the actor why would reveal that a record exists
//! (another applicant's application, another department's draft), it is [`Denial::Hidden`]: the
//! record is answered exactly as one that does not exist.
//!
//! ```
//! use policy::{authorize, Action, Actor, Denial, Principal, Resource, Role};
//! let owner = Actor::Principal(Principal {
//!     id: "transport-1".into(), name: "T".into(), role: Role::Owner, department: Some("Transport Bureau".into()),
//! });
//! assert!(authorize(&owner, Action::Withdraw, Resource::Dataset { owner: Some("Transport Bureau") }).is_ok());
//! let elsewhere = Resource::Application { applicant: "acme", owner: Some("Market Regulation") };
//! assert_eq!(authorize(&owner, Action::Decide, elsewhere), Err(Denial::Hidden));
//! ```

use crate::agreement::{Principal, Role};

/// Who is acting: the operators (by their token) or a principal (by its API key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Operator,
    Principal(Principal),
}

impl Actor {
    /// The name recorded as having acted.
    pub fn id(&self) -> &str {
        match self {
            Actor::Operator => "operator",
            Actor::Principal(p) => &p.id,
        }
    }

    /// The principal's id; `None` for the operators.
    pub fn principal_id(&self) -> Option<&str> {
        match self {
            Actor::Operator => None,
            Actor::Principal(p) => Some(&p.id),
        }
    }

    /// The department an owner acts for; `None` for users and for those who act for all.
    pub fn department(&self) -> Option<&str> {
        match self {
            Actor::Principal(p) if p.role == Role::Owner => p.department.as_deref(),
            _ => None,
        }
    }

    fn role(&self) -> Role {
        match self {
            Actor::Operator => Role::Operator,
            Actor::Principal(p) => p.role,
        }
    }

    /// Whether the actor answers for the data of `department` (`None`: a dataset no longer in
    /// the catalog, which only the operators answer for).
    fn answers_for(&self, department: Option<&str>) -> bool {
        match self.role() {
            Role::Operator => true,
            Role::Owner => department.is_some() && self.department() == department,
            Role::User => false,
        }
    }
}

/// A workflow action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Write a catalog entry's draft (a new entry, or a change to a published one).
    WriteDraft,
    /// Read a draft.
    ReadDraft,
    /// Publish a reviewed draft into the catalog.
    Publish,
    /// Stop serving a dataset at once.
    Withdraw,
    /// Serve a withdrawn dataset again.
    Reopen,
    /// Apply for a conditionally open dataset.
    Apply,
    /// Read an application.
    ReadApplication,
    /// Approve or reject an application.
    Decide,
    /// Read an agreement and its terms.
    ReadAgreement,
    /// Suspend, resume or revoke an agreement.
    ChangeAgreement,
    /// List the objections filed on datasets.
    ListObjections,
    /// See who filed an objection and how to reach them.
    SeeObjectionFiler,
    /// Answer and close an objection.
    Resolve,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 13] = [
        Action::WriteDraft,
        Action::ReadDraft,
        Action::Publish,
        Action::Withdraw,
        Action::Reopen,
        Action::Apply,
        Action::ReadApplication,
        Action::Decide,
        Action::ReadAgreement,
        Action::ChangeAgreement,
        Action::ListObjections,
        Action::SeeObjectionFiler,
        Action::Resolve,
    ];

    /// Whether only those who answer for a dataset (its owner, the operators) ever do this.
    pub fn is_owners(self) -> bool {
        !matches!(self, Action::Apply | Action::ReadApplication | Action::ReadAgreement)
    }

    /// Why a role that never does this is refused.
    fn wrong_role(self) -> &'static str {
        match self {
            Action::WriteDraft | Action::ReadDraft => "catalog entries are written by their owners",
            Action::Publish => "drafts are published by the operators after review",
            Action::Withdraw => "datasets are withdrawn by their owner or the operators",
            Action::Reopen => "datasets are reopened by their owner or the operators",
            Action::Apply => "applications are made by users, with their own key",
            Action::ReadApplication => "applications are read by their applicant and the dataset's owner",
            Action::Decide => "applications are decided by the dataset's owner",
            Action::ReadAgreement => "agreements are read by their holder and the owner of their datasets",
            Action::ChangeAgreement => {
                "agreements are changed by the owner of every dataset they cover, or the operators"
            }
            Action::ListObjections => "objection lists are for owners; follow your own at /v1/objections/{id}",
            Action::SeeObjectionFiler => "an objection's filer is seen by the dataset's owner",
            Action::Resolve => "objections are resolved by the dataset's owner",
        }
    }
}

/// What an action is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// The workflow as such, before any record is read: whether the actor's role does it at all.
    Workflow,
    /// A dataset, its draft or an objection to it, by its owning department (`None` when the
    /// dataset is not in the catalog).
    Dataset { owner: Option<&'a str> },
    /// An application: its applicant, and its dataset's owning department.
    Application { applicant: &'a str, owner: Option<&'a str> },
    /// An agreement: its holder, and the owning departments of the datasets it covers.
    Agreement { holder: &'a str, owners: &'a [Option<&'a str>] },
}

/// Proof that [`authorize`] allowed an action.
#[derive(Debug, PartialEq, Eq)]
pub struct Permit(());

/// Why an action is refused, and so how the refusal is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The actor may not learn that the record exists: answer as if it did not.
    Hidden,
    /// The actor's role does not do this (403), with the reason.
    WrongRole(String),
}

/// Whether `actor` may do `action` on `resource`.
pub fn authorize(actor: &Actor, action: Action, resource: Resource<'_>) -> Result<Permit, Denial> {
    let wrong = || Err(Denial::WrongRole(action.wrong_role().to_owned()));
    let role = actor.role();
    // Applying is the users' alone; what follows is the owners' and the operators'.
    if action == Action::Apply {
        return if role == Role::User { Ok(Permit(())) } else { wrong() };
    }
    if action == Action::Publish {
        return if role == Role::Operator { Ok(Permit(())) } else { wrong() };
    }
    match resource {
        Resource::Workflow => match action {
            // Users read their own applications and agreements; a draft of theirs reads like none.
            Action::ReadApplication | Action::ReadAgreement | Action::ReadDraft => Ok(Permit(())),
            // Whose filer may be seen is a matter of the objection's dataset.
            Action::SeeObjectionFiler => Ok(Permit(())),
            _ if role == Role::User => wrong(),
            _ => Ok(Permit(())),
        },
        Resource::Dataset { owner } => {
            if actor.answers_for(owner) {
                return Ok(Permit(()));
            }
            match action {
                // Another department's draft, or an objection's filer, reads like none.
                Action::ReadDraft | Action::SeeObjectionFiler | Action::ListObjections => Err(Denial::Hidden),
                Action::WriteDraft if role != Role::User => {
                    Err(Denial::WrongRole(format!("this dataset belongs to {}", owner.unwrap_or("another department"))))
                }
                Action::Withdraw | Action::Reopen => Err(Denial::WrongRole(format!(
                    "only {} or the operators {} this dataset",
                    owner.unwrap_or("its owner"),
                    if action == Action::Withdraw { "withdraw" } else { "reopen" }
                ))),
                _ => wrong(),
            }
        }
        Resource::Application { applicant, owner } => match action {
            Action::ReadApplication if actor.principal_id() == Some(applicant) || actor.answers_for(owner) => {
                Ok(Permit(()))
            }
            Action::ReadApplication => Err(Denial::Hidden),
            _ if role == Role::User => wrong(),
            _ if actor.answers_for(owner) => Ok(Permit(())),
            // To another department's owner, an application reads like none.
            _ => Err(Denial::Hidden),
        },
        Resource::Agreement { holder, owners } => {
            let answers_for_any = owners.iter().any(|o| actor.answers_for(*o));
            match action {
                Action::ReadAgreement if role == Role::User => {
                    if actor.principal_id() == Some(holder) {
                        Ok(Permit(()))
                    } else {
                        Err(Denial::Hidden)
                    }
                }
                Action::ReadAgreement if answers_for_any => Ok(Permit(())),
                Action::ReadAgreement => Err(Denial::Hidden),
                _ if role == Role::User => wrong(),
                // An owner that answers for none of its datasets finds it as missing as an
                // unknown id; one that answers for some but not all may not change it.
                _ if !answers_for_any => Err(Denial::Hidden),
                _ if owners.iter().all(|o| actor.answers_for(*o)) => Ok(Permit(())),
                _ => wrong(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, department: Option<&str>) -> Actor {
        Actor::Principal(Principal {
            id: "p".into(),
            name: "P".into(),
            role,
            department: department.map(str::to_owned),
        })
    }

    #[test]
    fn owners_act_for_their_department_only() {
        let owner = principal(Role::Owner, Some("Transport Bureau"));
        let on = |d| Resource::Dataset { owner: Some(d) };
        assert!(authorize(&owner, Action::Withdraw, on("Transport Bureau")).is_ok());
        assert!(matches!(authorize(&owner, Action::Withdraw, on("Market Regulation")), Err(Denial::WrongRole(_))));
        assert_eq!(authorize(&owner, Action::ReadDraft, on("Market Regulation")), Err(Denial::Hidden));
        let no_department = principal(Role::Owner, None);
        assert!(authorize(&no_department, Action::Resolve, on("Transport Bureau")).is_err());
        assert!(authorize(&owner, Action::Resolve, Resource::Dataset { owner: None }).is_err());
        assert!(authorize(&Actor::Operator, Action::Resolve, Resource::Dataset { owner: None }).is_ok());
    }

    #[test]
    fn an_agreement_is_changed_by_the_owner_of_every_dataset_it_covers() {
        let owner = principal(Role::Owner, Some("A"));
        let both = [Some("A"), Some("B")];
        let agreement = |owners| Resource::Agreement { holder: "acme", owners };
        assert!(matches!(authorize(&owner, Action::ChangeAgreement, agreement(&both)), Err(Denial::WrongRole(_))));
        assert!(authorize(&owner, Action::ChangeAgreement, agreement(&[Some("A")])).is_ok());
        assert_eq!(authorize(&owner, Action::ChangeAgreement, agreement(&[Some("B")])), Err(Denial::Hidden));
        assert!(authorize(&owner, Action::ReadAgreement, agreement(&both)).is_ok());
    }
}
