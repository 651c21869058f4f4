//! The default rule pack, embedded in the binary (`core/rules/*.toml`).

pub(crate) const FILES: [(&str, &str); 10] = [
    ("injection.toml", include_str!("../rules/injection.toml")),
    ("jailbreak.toml", include_str!("../rules/jailbreak.toml")),
    ("leak.toml", include_str!("../rules/leak.toml")),
    ("indirect.toml", include_str!("../rules/indirect.toml")),
    ("exfiltration.toml", include_str!("../rules/exfiltration.toml")),
    ("tool_abuse.toml", include_str!("../rules/tool_abuse.toml")),
    ("obfuscation.toml", include_str!("../rules/obfuscation.toml")),
    ("secrets.toml", include_str!("../rules/secrets.toml")),
    ("pii.toml", include_str!("../rules/pii.toml")),
    ("invisible.toml", include_str!("../rules/invisible.toml")),
];
