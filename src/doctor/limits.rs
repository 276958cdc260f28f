//! Settings that `run` accepts but that would misbehave in production: the UserSig lifetime, rates
//! above the vendor's limits, more replicas than partitions. No network.

use std::time::Duration;

use super::report::{count, Check, Problem};
use crate::chat::Api;
use crate::config::ChatArgs;

/// `AccountSyncUserSigExpiringSoon` fires when a replica calls the API with a UserSig this close
/// to its expiry; the refresh margin must keep the worker out of that window.
const EXPIRY_ALERT: Duration = Duration::from_secs(3600);
/// Shortest sensible use of one UserSig (validity minus margin): below it the worker signs anew
/// all the time, and a clock a little off makes fresh UserSigs look expired.
const MIN_USE: Duration = Duration::from_secs(3600);

/// What is wrong with a limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitProblem {
    /// The UserSig would be used while the expiry alert reports it.
    #[error(
        "--usersig-refresh-margin {margin} is under 1h: the worker would keep using a UserSig in \
         its last hour, which the alert AccountSyncUserSigExpiringSoon reports as a problem"
    )]
    MarginUnderAlert { margin: String },
    /// Each UserSig serves too short a time.
    #[error(
        "a UserSig would serve only {serves} (--usersig-validity {validity} minus \
         --usersig-refresh-margin {margin})"
    )]
    ShortLived {
        serves: String,
        validity: String,
        margin: String,
    },
    /// Rates above the vendor's limits, or unlimited.
    #[error("{}", .0.join("; "))]
    Rates(Vec<String>),
    /// Replicas that would get no partition.
    #[error(
        "--replicas {replicas} is more than the input topic's {partitions} partitions: {idle} \
         replicas would sit idle (a partition is consumed by one member of the group)"
    )]
    TooManyReplicas {
        replicas: u32,
        partitions: usize,
        idle: usize,
    },
}

impl Problem for LimitProblem {
    fn fix(&self) -> String {
        match self {
            LimitProblem::MarginUnderAlert { .. } => {
                "set --usersig-refresh-margin to 1h or more (default 1h)".into()
            }
            LimitProblem::ShortLived { .. } => {
                "set --usersig-validity well above the margin (default 180days)".into()
            }
            LimitProblem::Rates(_) => {
                "set --check-rate ≤ 100 and --import-rate ≤ 200: the vendor's \
                limits per app (for all replicas together); lower still if other software uses the \
                same SDKAppID"
                    .into()
            }
            LimitProblem::TooManyReplicas { partitions, .. } => {
                format!("run at most {partitions} replicas, or add partitions to the input topic")
            }
        }
    }
}

/// `180d`, `1h`, `179d 23h`: the two largest units, as a person reads a lifetime.
pub(super) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let parts: Vec<String> = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")]
        .iter()
        .scan(secs, |left, &(unit, name)| {
            let n = *left / unit;
            *left %= unit;
            Some((n, name))
        })
        .filter(|&(n, _)| n > 0)
        .take(2)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    parts.join(" ")
}

/// The `usersig` check: the refresh margin stays out of the expiry alert's hour, and each
/// UserSig serves long enough. (`run` itself refuses a margin not below the validity.)
pub(super) fn usersig(validity: Duration, margin: Duration) -> Check {
    Check::of("usersig", usersig_problem(validity, margin))
}

fn usersig_problem(validity: Duration, margin: Duration) -> Result<String, LimitProblem> {
    if margin < EXPIRY_ALERT {
        return Err(LimitProblem::MarginUnderAlert {
            margin: human(margin),
        });
    }
    let serves = validity.saturating_sub(margin);
    if serves < MIN_USE {
        return Err(LimitProblem::ShortLived {
            serves: human(serves),
            validity: human(validity),
            margin: human(margin),
        });
    }
    Ok(format!(
        "each UserSig is valid {} and replaced {} before it expires (a new one every {})",
        human(validity),
        human(margin),
        human(serves)
    ))
}

/// The `rates` check: every rate-limited API within the vendor's limit.
pub(super) fn rates(chat: &ChatArgs) -> Check {
    let configured = [
        (Api::AccountCheck, "--check-rate", chat.check_rate),
        (Api::AccountImport, "--import-rate", chat.import_rate),
        (
            Api::MultiaccountImport,
            "--batch-import-rate",
            chat.batch_import_rate,
        ),
        (Api::AccountDelete, "--delete-rate", chat.delete_rate),
    ];
    Check::of("rates", rates_problem(&configured))
}

/// `deletion` (with `--apply-deletes`): not checked, since the only test of account deletion is
/// to delete an account; says where the switch is and what the worker does while it is off.
pub(super) fn deletion(apply_deletes: bool) -> Option<Check> {
    apply_deletes.then(|| {
        Check::skip(
            "deletion",
            "account deletion cannot be tried without deleting an account. Check in the Chat console that the app may delete accounts (trial and developer editions may; paid editions switch it on). While it is off, account_delete answers 71000 and the worker pauses (AccountSyncAccountDeletionDisabled) until it is on",
        )
    })
}

fn rates_problem(configured: &[(Api, &str, f64)]) -> Result<String, LimitProblem> {
    let mut ok = Vec::new();
    let mut wrong = Vec::new();
    for &(api, flag, rate) in configured {
        let Some(limit) = api.vendor_rate_limit() else {
            continue;
        };
        if rate == 0.0 {
            wrong.push(format!(
                "{api} is unlimited ({flag} 0): the worker would go over the vendor's {limit}/s"
            ));
        } else if rate > limit {
            wrong.push(format!(
                "{api} at {rate}/s ({flag}) is above the vendor's limit of {limit}/s"
            ));
        } else {
            ok.push(format!("{api} {rate}/s (limit {limit})"));
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "within the vendor's limits for the whole app: {}",
            ok.join(", ")
        ))
    } else {
        Err(LimitProblem::Rates(wrong))
    }
}

/// The `replicas` check: `--replicas` against the input topic's partition count, when both are
/// known.
pub(super) fn replicas(replicas: Option<u32>, partitions: Option<usize>) -> Check {
    match (replicas, partitions) {
        (None, Some(p)) => Check::skip(
            "replicas",
            format!("give --replicas N (e.g. the chart's replicaCount) to compare with the {p} input partitions"),
        ),
        (None, None) => Check::skip("replicas", "no --replicas given"),
        (Some(_), None) => Check::skip("replicas", "the input topic's partitions are unknown"),
        (Some(r), Some(p)) => Check::of("replicas", replicas_problem(r, p))
            .with("replicas", r)
            .with("partitions", p),
    }
}

fn replicas_problem(replicas: u32, partitions: usize) -> Result<String, LimitProblem> {
    let r = replicas as usize;
    if r > partitions {
        return Err(LimitProblem::TooManyReplicas {
            replicas,
            partitions,
            idle: r - partitions,
        });
    }
    let (least, most) = (partitions / r, partitions.div_ceil(r));
    let share = format!(
        "{} for {}",
        count(r, "replica"),
        count(partitions, "partition")
    );
    Ok(if least == most {
        format!("{share}: {least} each")
    } else {
        format!(
            "{share}: {least} or {most} each (uneven: a replica's share of the work and of the \
             rate budget follows its partitions)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    const H: u64 = 3600;

    #[test]
    fn durations_read_like_lifetimes() {
        let d = Duration::from_secs;
        assert_eq!(human(d(180 * 86_400)), "180d");
        assert_eq!(human(d(180 * 86_400 - H)), "179d 23h");
        assert_eq!(human(d(H)), "1h");
        assert_eq!(human(Duration::from_millis(1500)), "1s");
        assert_eq!(human(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn usersig_margin_and_lifetime() {
        let d = Duration::from_secs;
        assert!(usersig_problem(d(180 * 86_400), d(H)).is_ok());
        assert!(matches!(
            usersig_problem(d(180 * 86_400), d(600)),
            Err(LimitProblem::MarginUnderAlert { .. })
        ));
        assert!(matches!(
            usersig_problem(d(H + 1800), d(H)),
            Err(LimitProblem::ShortLived { .. })
        ));
    }

    #[test]
    fn rates_against_the_vendor_limits() {
        let ok = rates_problem(&[
            (Api::AccountCheck, "--check-rate", 100.0),
            (Api::AccountImport, "--import-rate", 150.0),
        ]);
        assert!(ok.unwrap().contains("account_import 150/s (limit 200)"));
        let Err(LimitProblem::Rates(wrong)) = rates_problem(&[
            (Api::AccountCheck, "--check-rate", 150.0),
            (Api::AccountImport, "--import-rate", 0.0),
            (Api::MultiaccountImport, "--check-rate", 150.0),
        ]) else {
            panic!("accepted")
        };
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(wrong[0].contains("above the vendor's limit of 100/s"));
        assert!(wrong[1].contains("unlimited"));
    }

    #[test]
    fn deletion_is_never_tried_but_explained() {
        assert!(deletion(false).is_none());
        let check = deletion(true).unwrap();
        assert_eq!(check.status, Status::Skip);
        assert!(check.message.contains("71000"), "{}", check.message);
        assert!(check.message.contains("console"), "{}", check.message);
    }

    #[test]
    fn replicas_against_partitions() {
        assert_eq!(
            replicas_problem(3, 6).unwrap(),
            "3 replicas for 6 partitions: 2 each"
        );
        assert!(replicas_problem(4, 6).unwrap().contains("1 or 2 each"));
        assert_eq!(
            replicas_problem(8, 6),
            Err(LimitProblem::TooManyReplicas {
                replicas: 8,
                partitions: 6,
                idle: 2
            })
        );
        assert_eq!(replicas(None, Some(6)).status, super::super::Status::Skip);
    }
}
