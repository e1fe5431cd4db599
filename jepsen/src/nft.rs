//! nftables rule sets for the nemesis: drop rules between node addresses.
//!
//! Each node's namespace holds one table, `inet sj_RUN`, with one input
//! chain. A partition is a *grudge*: for each node, the set of nodes whose
//! packets it drops on arrival (Jepsen's term). Only node addresses are
//! ever matched, so the harness's client traffic, which comes from the
//! bridge's own address, is never cut. Packet loss is the same rule with
//! `numgen random mod 100 < P`.
//!
//! Every change replaces the whole table in one `nft -f` transaction
//! (declare, delete, re-create), so a rule set is never half applied.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// The table with an empty input chain (no faults).
pub fn empty_table(table: &str) -> String {
    ruleset(table, &[], None)
}

/// The table for one node: drop everything from `drop_from`, and a random
/// `percent` of what comes from `lossy_from`.
pub fn ruleset(table: &str, drop_from: &[Ipv4Addr], loss: Option<(u8, &[Ipv4Addr])>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {table}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    let _ = writeln!(s, "  chain input {{");
    let _ = writeln!(s, "    type filter hook input priority 0; policy accept;");
    if !drop_from.is_empty() {
        let _ = writeln!(s, "    ip saddr {{ {} }} drop", join(drop_from));
    }
    if let Some((percent, from)) = loss
        && percent > 0
        && !from.is_empty()
    {
        assert!(percent <= 100, "a loss of {percent}% is not a percentage");
        let _ = writeln!(
            s,
            "    ip saddr {{ {} }} numgen random mod 100 < {percent} drop",
            join(from)
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

fn join(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_node_addresses_only() {
        let a = Ipv4Addr::new(10, 64, 1, 11);
        let b = Ipv4Addr::new(10, 64, 1, 12);
        let script = ruleset("sj_0badc0de", &[a], Some((30, &[b])));
        assert!(script.contains("ip saddr { 10.64.1.11 } drop"), "{script}");
        assert!(
            script.contains("ip saddr { 10.64.1.12 } numgen random mod 100 < 30 drop"),
            "{script}"
        );
        assert!(
            !script.contains(".1 }"),
            "the gateway must never be matched"
        );
        let empty = empty_table("sj_0badc0de");
        assert!(!empty.contains("saddr"));
        assert!(empty.starts_with("table inet sj_0badc0de\ndelete table inet sj_0badc0de\n"));
    }
}
