//! Points where the fault tests make keel wait, to hit a window that is
//! otherwise narrow: `KEEL_FAULT_DELAY=point=ms[,point=ms...]` makes
//! [`point`] sleep that long when it reaches the named point (a test then
//! kills the process there, or lets another process overtake it). Unset,
//! a point costs one look at a value read once.

use std::sync::OnceLock;
use std::time::Duration;

fn delays() -> &'static [(String, u64)] {
    static DELAYS: OnceLock<Vec<(String, u64)>> = OnceLock::new();
    DELAYS.get_or_init(|| {
        std::env::var("KEEL_FAULT_DELAY")
            .map(|text| parse(&text))
            .unwrap_or_default()
    })
}

fn parse(text: &str) -> Vec<(String, u64)> {
    text.split(',')
        .filter_map(|entry| {
            let (name, ms) = entry.split_once('=')?;
            Some((name.trim().to_string(), ms.trim().parse().ok()?))
        })
        .collect()
}

/// Sleeps here if `KEEL_FAULT_DELAY` names this point.
pub fn point(name: &str) {
    if let Some((_, ms)) = delays().iter().find(|(n, _)| n == name) {
        std::thread::sleep(Duration::from_millis(*ms));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_points() {
        assert_eq!(
            super::parse("a=5, b = 10,bad,c=x"),
            [("a".to_string(), 5), ("b".to_string(), 10)]
        );
    }
}
