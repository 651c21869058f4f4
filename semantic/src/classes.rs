//! Class names of banks and heads, and the core family each stands for.

use featherguard_core::Family;

/// The class of benign examples.
pub const BENIGN: &str = "benign";

/// The core family of an attack class: a family name (`jailbreak`, `prompt_injection`, ...) or
/// the corpus alias `harmful_request` (= `harmful_content`). `None` for unknown names.
pub fn family_of(class: &str) -> Option<Family> {
    match class {
        "harmful_request" => Some(Family::HarmfulContent),
        other => other.parse().ok().filter(|f| *f != Family::Limits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_families() {
        assert_eq!(family_of("harmful_request"), Some(Family::HarmfulContent));
        assert_eq!(family_of("jailbreak"), Some(Family::Jailbreak));
        assert_eq!(family_of("limits"), None);
        assert_eq!(family_of("nonsense"), None);
    }
}
