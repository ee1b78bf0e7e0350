//! Names for containers that were given none, docker-style:
//! `adjective_scientist`, with a digit appended if the first pick is taken.

const ADJECTIVES: &[&str] = &[
    "agile", "amused", "bold", "brave", "bright", "calm", "careful", "clever", "cool", "cosmic",
    "curious", "daring", "eager", "epic", "fervent", "focused", "gallant", "gentle", "happy",
    "hopeful", "jolly", "keen", "kind", "lucid", "merry", "modest", "nifty", "patient", "quick",
    "quiet", "relaxed", "serene", "sharp", "steady", "stoic", "sunny", "tender", "trusting",
    "vibrant", "vigilant", "wizardly", "zealous",
];

const SCIENTISTS: &[&str] = &[
    "agnesi",
    "archimedes",
    "babbage",
    "bell",
    "bohr",
    "cannon",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goodall",
    "hamilton",
    "hawking",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "newton",
    "noether",
    "pascal",
    "ptolemy",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "volta",
    "wozniak",
    "yalow",
];

/// A name from `random` (any 64 random bits); `attempt` > 0 adds a digit.
pub fn generate(random: u64, attempt: u32) -> String {
    let adjective = ADJECTIVES[(random % ADJECTIVES.len() as u64) as usize];
    let scientist = SCIENTISTS[((random >> 32) % SCIENTISTS.len() as u64) as usize];
    if attempt == 0 {
        format!("{adjective}_{scientist}")
    } else {
        format!("{adjective}_{scientist}{}", attempt % 10)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_valid_container_names() {
        for random in [0u64, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            for attempt in 0..3 {
                let name = super::generate(random, attempt);
                assert!(
                    crate::spec::validate_container_name(&name).is_ok(),
                    "{name}"
                );
            }
        }
    }
}
