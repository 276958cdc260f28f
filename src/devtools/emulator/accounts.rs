//! The emulated service's accounts: which exist, their profiles, what each call did to each user,
//! and the vendor's rules on them (the edition's limit, the 3 months after a deletion).
//!
//! One `std::sync::Mutex` guards the store (held only for look-ups, never across an `.await`),
//! so the order of a user's log is the order the calls were applied in.
//!
//! Preexisting accounts are not stored at all: they are a pure function of the UserID
//! ([`is_preexisting`]), so `existing_fraction` costs no memory however many IDs a benchmark uses.
//! Deleting one records it in `deleted`. Profiles and the per-user log are kept only when asked
//! (`--user-log`, for tests): a benchmark of millions of users keeps neither.

use std::collections::{HashMap, HashSet};

use super::is_preexisting;

/// An account's Nick and FaceUrl, as the emulator keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The nickname, if one was given.
    pub nick: Option<String>,
    /// The avatar URL, if one was given.
    pub face_url: Option<String>,
}

/// What one call did to one user, in the order the emulator applied the calls
/// ([`super::EmulatorHandle::user_log`]). Calls refused as a whole (frequency limit, UserSig,
/// injected faults, deletion switched off) did nothing and are not in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCall {
    /// `account_check` asked about the user.
    Checked { exists: bool },
    /// An import created the account with this profile.
    Created {
        nick: Option<String>,
        face_url: Option<String>,
    },
    /// `multiaccount_import` of an existing account wrote these fields (the others stay).
    Overwritten {
        nick: Option<String>,
        face_url: Option<String>,
    },
    /// `account_import` of an existing account: nothing changed.
    Unchanged,
    /// `account_delete` removed the account.
    Deleted,
    /// `account_delete` found no account (70107).
    DeleteAbsent,
    /// An import was refused for this user (70398 the edition's limit, 70399 deleted recently).
    Refused { code: i64 },
}

/// Why an import was refused (the caller maps it to a vendor code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportRefused {
    /// The edition's account limit is reached (70398).
    EditionLimit,
    /// A paid edition's UserID deleted less than 3 months ago (70399).
    DeletedRecently,
}

impl ImportRefused {
    /// The vendor's code.
    pub(crate) fn code(self) -> i64 {
        match self {
            ImportRefused::EditionLimit => 70398,
            ImportRefused::DeletedRecently => 70399,
        }
    }
}

/// How an import treats an account that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// `account_import`: leave it alone.
    Keep,
    /// `multiaccount_import`: write the given Nick / FaceUrl.
    Overwrite,
}

/// The rules and memory sizes of an account store.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccountRules {
    /// Share of all UserIDs that existed before the run.
    pub existing_fraction: f64,
    /// Edition limit on the accounts created during the run.
    pub max_accounts: Option<u64>,
    /// Paid edition: a UserID deleted during the run cannot be imported again (the vendor's 3
    /// months are longer than any run).
    pub paid_edition: bool,
    /// Keep profiles and the per-user log.
    pub user_log: bool,
}

/// The account store.
#[derive(Debug)]
pub(crate) struct Accounts {
    rules: AccountRules,
    /// Accounts created during this run and not deleted.
    imported: HashSet<String>,
    /// Preexisting accounts deleted during this run.
    deleted: HashSet<String>,
    /// Paid editions: every UserID deleted during this run.
    deleted_recently: HashSet<String>,
    /// With `user_log`: the profile of each account created or overwritten during the run.
    profiles: HashMap<String, Profile>,
    /// With `user_log`: each user's calls, in the order they were applied.
    log: HashMap<String, Vec<UserCall>>,
}

impl Accounts {
    pub(crate) fn new(rules: AccountRules) -> Self {
        Accounts {
            rules,
            imported: HashSet::new(),
            deleted: HashSet::new(),
            deleted_recently: HashSet::new(),
            profiles: HashMap::new(),
            log: HashMap::new(),
        }
    }

    fn preexisting(&self, user_id: &str) -> bool {
        is_preexisting(user_id, self.rules.existing_fraction) && !self.deleted.contains(user_id)
    }

    pub(crate) fn exists(&self, user_id: &str) -> bool {
        self.imported.contains(user_id) || self.preexisting(user_id)
    }

    /// `account_check` of `user_id`: whether it exists (logged).
    pub(crate) fn check(&mut self, user_id: &str) -> bool {
        let exists = self.exists(user_id);
        self.record(user_id, UserCall::Checked { exists });
        exists
    }

    /// Imports `user_id` with `profile`. Importing an existing account succeeds: it changes
    /// nothing (`Existing::Keep`) or writes the given fields (`Existing::Overwrite`). Only a *new*
    /// account can hit the edition limit or the 3-month rule.
    pub(crate) fn import(
        &mut self,
        user_id: &str,
        profile: &Profile,
        existing: Existing,
    ) -> Result<(), ImportRefused> {
        if self.exists(user_id) {
            let call = match existing {
                Existing::Keep => UserCall::Unchanged,
                Existing::Overwrite => {
                    self.overwrite(user_id, profile);
                    UserCall::Overwritten {
                        nick: profile.nick.clone(),
                        face_url: profile.face_url.clone(),
                    }
                }
            };
            self.record(user_id, call);
            return Ok(());
        }
        let refused = if self.rules.paid_edition && self.deleted_recently.contains(user_id) {
            Some(ImportRefused::DeletedRecently)
        } else if self
            .rules
            .max_accounts
            .is_some_and(|max| self.imported.len() as u64 >= max)
        {
            Some(ImportRefused::EditionLimit)
        } else {
            None
        };
        if let Some(refused) = refused {
            self.record(
                user_id,
                UserCall::Refused {
                    code: refused.code(),
                },
            );
            return Err(refused);
        }
        // A deleted preexisting account that comes back is an import of this run: it stays in
        // `deleted` and counts in `imported`, which keeps `exists` a simple "or".
        self.imported.insert(user_id.to_owned());
        if self.rules.user_log {
            self.profiles.insert(user_id.to_owned(), profile.clone());
        }
        self.record(
            user_id,
            UserCall::Created {
                nick: profile.nick.clone(),
                face_url: profile.face_url.clone(),
            },
        );
        Ok(())
    }

    /// Removes an account; false when there was none (70107).
    pub(crate) fn delete(&mut self, user_id: &str) -> bool {
        let existed = if self.imported.remove(user_id) {
            true
        } else if self.preexisting(user_id) {
            self.deleted.insert(user_id.to_owned());
            true
        } else {
            false
        };
        if existed {
            self.profiles.remove(user_id);
            if self.rules.paid_edition {
                self.deleted_recently.insert(user_id.to_owned());
            }
        }
        let call = if existed {
            UserCall::Deleted
        } else {
            UserCall::DeleteAbsent
        };
        self.record(user_id, call);
        existed
    }

    /// The account's profile (`None`: no account). Without `user_log`, or for an account the run
    /// never wrote, its fields are unknown: `Some(Profile::default())`.
    pub(crate) fn profile(&self, user_id: &str) -> Option<Profile> {
        self.exists(user_id)
            .then(|| self.profiles.get(user_id).cloned().unwrap_or_default())
    }

    /// What the calls did to `user_id`, in order (empty without `user_log`).
    pub(crate) fn log(&self, user_id: &str) -> Vec<UserCall> {
        self.log.get(user_id).cloned().unwrap_or_default()
    }

    pub(crate) fn imported_count(&self) -> u64 {
        self.imported.len() as u64
    }

    fn overwrite(&mut self, user_id: &str, profile: &Profile) {
        if !self.rules.user_log {
            return;
        }
        let kept = self.profiles.entry(user_id.to_owned()).or_default();
        if profile.nick.is_some() {
            kept.nick = profile.nick.clone();
        }
        if profile.face_url.is_some() {
            kept.face_url = profile.face_url.clone();
        }
    }

    fn record(&mut self, user_id: &str, call: UserCall) {
        if self.rules.user_log {
            self.log.entry(user_id.to_owned()).or_default().push(call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(fraction: f64) -> (String, String, String) {
        let pre = (0..)
            .map(|i| format!("u{i}"))
            .find(|u| is_preexisting(u, fraction))
            .unwrap();
        let mut fresh = (0..)
            .map(|i| format!("u{i}"))
            .filter(|u| !is_preexisting(u, fraction));
        (pre, fresh.next().unwrap(), fresh.next().unwrap())
    }

    fn nick(n: &str) -> Profile {
        Profile {
            nick: Some(n.into()),
            face_url: None,
        }
    }

    #[test]
    fn accounts_model() {
        let (pre, fresh, fresh2) = ids(0.5);
        let mut a = Accounts::new(AccountRules {
            existing_fraction: 0.5,
            max_accounts: Some(1),
            ..AccountRules::default()
        });
        let none = Profile::default();
        assert!(a.exists(&pre));
        assert!(!a.exists(&fresh));
        assert_eq!(a.import(&pre, &none, Existing::Keep), Ok(()));
        assert_eq!(
            a.imported_count(),
            0,
            "re-import of a preexisting account creates nothing"
        );
        assert_eq!(a.import(&fresh, &none, Existing::Keep), Ok(()));
        assert_eq!(a.import(&fresh, &none, Existing::Keep), Ok(()));
        assert_eq!(a.imported_count(), 1);
        assert_eq!(
            a.import(&fresh2, &none, Existing::Keep),
            Err(ImportRefused::EditionLimit)
        );
        assert!(a.delete(&pre));
        assert!(!a.exists(&pre));
        assert!(!a.delete(&pre));
        assert!(a.delete(&fresh));
        assert_eq!(a.imported_count(), 0);
        // A trial edition imports a deleted UserID again at once.
        assert_eq!(a.import(&pre, &none, Existing::Keep), Ok(()));
        assert!(a.exists(&pre));
        assert_eq!(a.imported_count(), 1);
    }

    #[test]
    fn profiles_and_the_log_follow_each_call() {
        let (_, u, _) = ids(0.5);
        let mut a = Accounts::new(AccountRules {
            user_log: true,
            ..AccountRules::default()
        });
        assert!(!a.check(&u));
        a.import(&u, &nick("a"), Existing::Keep).unwrap();
        a.import(&u, &nick("b"), Existing::Keep).unwrap();
        assert_eq!(a.profile(&u), Some(nick("a")), "the single import keeps");
        let avatar = Profile {
            nick: None,
            face_url: Some("f".into()),
        };
        a.import(&u, &avatar, Existing::Overwrite).unwrap();
        let both = Profile {
            nick: Some("a".into()),
            face_url: Some("f".into()),
        };
        assert_eq!(
            a.profile(&u),
            Some(both),
            "the batch import writes what it is given"
        );
        assert!(a.delete(&u));
        assert_eq!(a.profile(&u), None);
        assert!(!a.delete(&u));
        assert_eq!(
            a.log(&u),
            vec![
                UserCall::Checked { exists: false },
                UserCall::Created {
                    nick: Some("a".into()),
                    face_url: None
                },
                UserCall::Unchanged,
                UserCall::Overwritten {
                    nick: None,
                    face_url: Some("f".into())
                },
                UserCall::Deleted,
                UserCall::DeleteAbsent,
            ]
        );
    }

    #[test]
    fn a_paid_edition_refuses_a_deleted_user_id() {
        let (pre, fresh, _) = ids(0.5);
        let mut a = Accounts::new(AccountRules {
            existing_fraction: 0.5,
            paid_edition: true,
            user_log: true,
            ..AccountRules::default()
        });
        let none = Profile::default();
        a.import(&fresh, &none, Existing::Keep).unwrap();
        for u in [&pre, &fresh] {
            assert!(a.delete(u));
            assert_eq!(
                a.import(u, &none, Existing::Overwrite),
                Err(ImportRefused::DeletedRecently)
            );
            assert_eq!(a.log(u).last(), Some(&UserCall::Refused { code: 70399 }));
        }
    }

    #[test]
    fn without_the_log_nothing_is_kept_per_user() {
        let (_, u, _) = ids(0.5);
        let mut a = Accounts::new(AccountRules::default());
        a.import(&u, &nick("a"), Existing::Overwrite).unwrap();
        assert_eq!(a.profile(&u), Some(Profile::default()));
        assert!(a.log(&u).is_empty());
    }
}
