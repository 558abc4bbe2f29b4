//! The packet-filter rules berth owns, made with `iptables`/`ip6tables` (both the nft and the
//! legacy backends work). All of them live in berth's own chains, each jumped to from one rule in a
//! built-in chain, and every rule carries a comment naming what it belongs to, so it can be
//! removed with its pod or bridge:
//!
//! - nat `BERTH-POSTROUTING` (from POSTROUTING): masquerade for traffic leaving a bridge's subnet,
//!   and for host-port traffic that came from the host's loopback addresses;
//! - nat `BERTH-HOSTPORTS` (from PREROUTING and OUTPUT, for local destinations): DNAT of host ports;
//! - filter `BERTH-FORWARD` (from FORWARD): accept what enters or leaves a bridge, so a DROP policy
//!   on the host does not cut pods off.

use std::net::IpAddr;
use std::process::Command;

use crate::error::{Error, Result};

pub const POSTROUTING: &str = "BERTH-POSTROUTING";
pub const HOSTPORTS: &str = "BERTH-HOSTPORTS";
pub const FORWARD: &str = "BERTH-FORWARD";

/// The command for one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    fn bin(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Runs `iptables -w <args>`; the error carries iptables' own message.
pub fn run(fam: Family, args: &[&str]) -> Result<String> {
    let out = Command::new(fam.bin())
        .arg("-w")
        .args(args)
        .output()
        .map_err(Error::io("run", fam.bin()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Iptables(
            format!("{} {}", fam.bin(), args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Whether the rule exists (`-C`).
fn exists(fam: Family, table: &str, chain: &str, rule: &[&str]) -> bool {
    let mut args = vec!["-t", table, "-C", chain];
    args.extend_from_slice(rule);
    run(fam, &args).is_ok()
}

/// Appends the rule unless it is there already.
pub fn ensure_rule(fam: Family, table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    if exists(fam, table, chain, rule) {
        return Ok(());
    }
    append(fam, table, chain, rule)
}

/// Appends the rule (one `iptables` run: for rules that cannot exist yet, such as a new pod's).
pub fn append(fam: Family, table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    let mut args = vec!["-t", table, "-A", chain];
    args.extend_from_slice(rule);
    run(fam, &args).map(drop)
}

/// Creates `chain` in `table` if missing, and the jump to it from `from` (with `matches` before the
/// jump) if missing.
pub fn ensure_chain(fam: Family, table: &str, chain: &str, from: &str, matches: &[&str]) -> Result<()> {
    if run(fam, &["-t", table, "-S", chain]).is_err() {
        // Another berthd (or a test) may have made it meanwhile: only a second failure counts.
        if let Err(e) = run(fam, &["-t", table, "-N", chain])
            && run(fam, &["-t", table, "-S", chain]).is_err()
        {
            return Err(e);
        }
    }
    let mut jump: Vec<&str> = matches.to_vec();
    jump.extend_from_slice(&["-j", chain]);
    if !exists(fam, table, from, &jump) {
        let mut args = vec!["-t", table, "-I", from, "1"];
        args.extend_from_slice(&jump);
        run(fam, &args)?;
    }
    Ok(())
}

/// Deletes every rule of `chain` whose comment is `comment`. A missing chain is fine.
pub fn delete_commented(fam: Family, table: &str, chain: &str, comment: &str) -> Result<usize> {
    let Ok(listing) = run(fam, &["-t", table, "-S", chain]) else {
        return Ok(0);
    };
    let mut n = 0;
    for line in listing.lines() {
        let words = split_rule(line);
        let tagged = words.windows(2).any(|w| w[0] == "--comment" && w[1] == comment);
        if words.first().map(String::as_str) != Some("-A") || !tagged {
            continue;
        }
        let mut args: Vec<&str> = vec!["-t", table, "-D"];
        args.extend(words[1..].iter().map(String::as_str));
        run(fam, &args)?;
        n += 1;
    }
    Ok(n)
}

/// Whether any rule of `chain` carries `comment`.
pub fn has_commented(fam: Family, table: &str, chain: &str, comment: &str) -> bool {
    run(fam, &["-t", table, "-S", chain])
        .map(|l| l.lines().any(|line| split_rule(line).iter().any(|w| w == comment)))
        .unwrap_or(false)
}

/// Splits an `iptables -S` line into words, honouring double quotes.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_iptables_listings() {
        assert_eq!(
            split_rule(r#"-A BERTH-HOSTPORTS -p tcp -m comment --comment "berth:abc def" -j DNAT"#),
            [
                "-A",
                "BERTH-HOSTPORTS",
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "berth:abc def",
                "-j",
                "DNAT"
            ]
        );
        assert_eq!(split_rule("-N X"), ["-N", "X"]);
    }
}
