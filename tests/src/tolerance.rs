//! What an event (a failover, a switchover) may cost each client of a [`load`](crate::load),
//! stated per client and per SQLSTATE instead of as a total over all clients, where one
//! client could take every error. An [`Allowance`] names the codes a client may see and how
//! often, each with the reason its outcome is unknown; every other code, and every failed
//! connection attempt, is allowed 0 times. [`Allowance::check`] also requires every client of
//! every driver to have completed an operation after the event: the total going on is not
//! enough, each client must resume.

use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::{bail, Result};

use crate::load::LoadReport;
use crate::patroni::{clock, unix_seconds};

/// Statement errors one client may see, by SQLSTATE; anything not listed is allowed 0 times.
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    codes: &'static [(&'static str, u64, &'static str)],
}

impl Allowance {
    /// No error of any kind for any client.
    pub const NONE: Allowance = Allowance { codes: &[] };

    /// One `08006` per client and nothing else: the connection to the server broke with no
    /// `FATAL` (a crash, or a backend that died before it could send one), while the client's
    /// statement was running. Whether that statement committed is unknown, so the proxy must
    /// not run it again and surfaces the loss; one per client, because a client has one
    /// statement in flight. What a server ended with `FATAL 57P01` before any result is run
    /// again by the proxy and may not reach the client (`57P01` is allowed 0 times), nor may
    /// a write reach a read-only node (`25006`), a failed connection attempt, or a timeout.
    pub const ONE_UNKNOWN_OUTCOME: Allowance = Allowance {
        codes: &[(
            "08006",
            1,
            "the server connection broke with no FATAL while the statement ran: its outcome is unknown",
        )],
    };

    /// How many errors with `code` one client may see.
    pub fn allowed(&self, code: &str) -> u64 {
        self.codes
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or(0, |&(_, n, _)| n)
    }

    /// Prints each client's errors and last success, then fails unless every client of every
    /// report stayed within the allowance and completed an operation after `resumed_after`.
    pub fn check(&self, reports: &[&LoadReport], resumed_after: SystemTime) -> Result<()> {
        let after = unix_seconds(resumed_after);
        let mut table = String::new();
        let mut broken = Vec::new();
        for report in reports {
            for c in &report.per_client {
                let who = format!("{} client {}", report.driver, c.client);
                let _ = writeln!(
                    table,
                    "  {who}: {} ok, errors {:?}, failed connects {:?}, last success {} UTC ({:+.3} s after the event)",
                    c.ops_ok,
                    c.errors,
                    c.connect_failures,
                    clock(c.last_ok),
                    c.last_ok - after
                );
                for (code, &n) in &c.errors {
                    let allowed = self.allowed(code);
                    if n > allowed {
                        broken.push(format!("{who}: {n} x {code}, allowed {allowed}"));
                    }
                }
                for (code, &n) in &c.connect_failures {
                    broken.push(format!(
                        "{who}: {n} failed connection attempts ({code}), allowed 0"
                    ));
                }
                if c.last_ok <= after {
                    broken.push(format!("{who}: no operation completed after the event"));
                }
            }
        }
        eprintln!("per client ({}):\n{table}", self.describe());
        if !broken.is_empty() {
            bail!(
                "clients outside the allowance ({}):\n  {}\n{table}",
                self.describe(),
                broken.join("\n  ")
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        if self.codes.is_empty() {
            return "no error for any client".to_owned();
        }
        let codes: Vec<String> = self
            .codes
            .iter()
            .map(|(c, n, why)| format!("at most {n} x {c} per client ({why})"))
            .collect();
        format!("{}; 0 of anything else", codes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::load::ClientOutcome;

    fn client(id: u32, errors: &[(&str, u64)], last_ok: f64) -> ClientOutcome {
        ClientOutcome {
            client: id,
            errors: errors
                .iter()
                .map(|&(c, n)| (c.to_owned(), n))
                .collect::<BTreeMap<_, _>>(),
            last_ok,
            ..Default::default()
        }
    }

    fn report(clients: Vec<ClientOutcome>) -> LoadReport {
        LoadReport {
            driver: "test".to_owned(),
            per_client: clients,
            ..Default::default()
        }
    }

    #[test]
    fn each_client_is_judged_on_its_own_per_sqlstate() {
        let event = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let after = 1001.0;
        let one = Allowance::ONE_UNKNOWN_OUTCOME;
        // One 08006 for each client is allowed; the total (3) does not matter.
        let fine = report((0..3).map(|i| client(i, &[("08006", 1)], after)).collect());
        assert!(one.check(&[&fine], event).is_ok());
        // Two for one client is not, though the total (2) is below the number of clients.
        let twice = report(vec![client(0, &[("08006", 2)], after), client(1, &[], after)]);
        assert!(one.check(&[&twice], event).is_err());
        // Any other code is allowed 0 times.
        let fatal = report(vec![client(0, &[("57P01", 1)], after)]);
        assert!(one.check(&[&fatal], event).is_err());
        assert!(Allowance::NONE.check(&[&fine], event).is_err());
        // A failed connection attempt counts.
        let mut refused = client(0, &[], after);
        refused.connect_failures.insert("08001".to_owned(), 1);
        assert!(one.check(&[&report(vec![refused])], event).is_err());
        // A client whose last success came before the event did not resume.
        let stuck = report(vec![client(0, &[], after), client(1, &[], 999.0)]);
        assert!(Allowance::NONE.check(&[&stuck], event).is_err());
    }
}
