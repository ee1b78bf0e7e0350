//! What a container's name server knows: the name records of the
//! user-defined networks it is on (`<runroot>/networks/<id>.json`,
//! rendered by [`super::sync_locked`]), read afresh for each question so
//! that containers starting, stopping, connecting and being renamed are
//! seen at once.
//!
//! A name is a container's name, one of its aliases on that network, or
//! a prefix of its id of at least 12 characters (docker's short id).

use std::net::IpAddr;

use keel_net::dns::{Lookup, Question};

use super::NameRecord;
use crate::paths::Layout;

/// The records of every network `container` is on.
fn networks_of(layout: &Layout, container: &str) -> Vec<Vec<NameRecord>> {
    let Ok(entries) = std::fs::read_dir(super::records_dir(layout)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Vec<NameRecord>>(&bytes).ok())
        .filter(|records| records.iter().any(|r| r.container == container))
        .collect()
}

fn matches(record: &NameRecord, name: &str) -> bool {
    record.name.eq_ignore_ascii_case(name)
        || record.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        || (name.len() >= 12 && record.container.starts_with(name))
}

/// Answers a question from `container`'s point of view.
pub fn lookup(layout: &Layout, container: &str, question: &Question) -> Lookup {
    let networks = networks_of(layout, container);
    match question {
        Question::Name(name) => {
            let mut addresses: Vec<IpAddr> = Vec::new();
            let mut known = false;
            for record in networks.iter().flatten().filter(|r| matches(r, name)) {
                known = true;
                for ip in [record.ipv4, record.ipv6].into_iter().flatten() {
                    if !addresses.contains(&ip) {
                        addresses.push(ip);
                    }
                }
            }
            if known {
                Lookup::Addresses(addresses)
            } else {
                Lookup::Unknown
            }
        }
        Question::Address(ip) => networks
            .iter()
            .flatten()
            .find(|r| r.ipv4 == Some(*ip) || r.ipv6 == Some(*ip))
            .map(|r| Lookup::Name(r.name.clone()))
            .unwrap_or(Lookup::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_ids_resolve_on_shared_networks_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("root"), dir.path().join("run"));
        let records = super::super::records_dir(&layout);
        std::fs::create_dir_all(&records).unwrap();
        let record = |c: &str, n: &str, ip: &str, aliases: &[&str]| NameRecord {
            container: c.into(),
            name: n.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
        };
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        std::fs::write(
            records.join("n1.json"),
            serde_json::to_vec(&vec![
                record(&a, "web", "10.1.0.2", &[]),
                record(&b, "db", "10.1.0.3", &["database"]),
            ])
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            records.join("n2.json"),
            serde_json::to_vec(&vec![record(&c, "other", "10.2.0.2", &[])]).unwrap(),
        )
        .unwrap();
        let ask = |name: &str| lookup(&layout, &a, &Question::Name(name.into()));
        let ip = |s: &str| Lookup::Addresses(vec![s.parse().unwrap()]);
        assert_eq!(ask("db"), ip("10.1.0.3"));
        assert_eq!(ask("DATABASE"), ip("10.1.0.3"));
        assert_eq!(ask(&b[..12]), ip("10.1.0.3"));
        assert_eq!(ask(&b[..6]), Lookup::Unknown);
        // Not on a network `a` shares.
        assert_eq!(ask("other"), Lookup::Unknown);
        assert_eq!(
            lookup(&layout, &a, &Question::Address("10.1.0.3".parse().unwrap())),
            Lookup::Name("db".into())
        );
    }
}
