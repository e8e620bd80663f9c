//! `examples/unspoof.toml` is the reference for every key: each key of each section's type is
//! in it (set, or commented out with a working value), what it sets is valid, and the shipped
//! policy does not quarantine the shipped genuine sample. That it starts as it is (with
//! `./scripts/run.sh`) is tested beside the README's commands (tests/readme.rs).

use std::{cell::Cell, collections::BTreeSet, path::PathBuf, process::Command};

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};

fn examples(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A deserializer that only records the field names serde's derive hands to
/// `deserialize_struct`: the keys a config type reads, taken from the type itself.
struct Probe<'a>(&'a Cell<&'static [&'static str]>);

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(fields);
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn keys_of<T: DeserializeOwned>() -> BTreeSet<String> {
    let fields = Cell::new(&[][..]);
    let _ = <T as Deserialize>::deserialize(Probe(&fields));
    assert!(
        !fields.get().is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    fields.get().iter().map(|f| f.to_string()).collect()
}

/// The example with its commented-out keys and section headers (`# key = value`,
/// `# [section]`) put back: every key the file documents.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix('#') else {
                return line.to_string();
            };
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let key = rest
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            if key.is_some() || rest.starts_with('[') {
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn table<'a>(t: &'a toml::Table, path: &str) -> &'a toml::Table {
    let mut at = t;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        at = match &at[part] {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => a[0].as_table().unwrap(),
            other => panic!("{path}: {other:?}"),
        };
    }
    at
}

#[test]
fn every_key_of_every_section_is_in_the_example() {
    let text = std::fs::read_to_string(examples("unspoof.toml")).unwrap();
    let full = uncommented(&text);
    let file: toml::Table = full
        .parse()
        .unwrap_or_else(|e| panic!("the example with its comments put back:\n{e}"));
    let sections: Vec<(&str, BTreeSet<String>)> = vec![
        ("", keys_of::<unspoof_engine::Policy>()),
        ("actions", keys_of::<unspoof_engine::policy::Actions>()),
        ("tag", keys_of::<unspoof_engine::policy::TagSettings>()),
        (
            "protected_people",
            keys_of::<unspoof_engine::policy::ProtectedPerson>(),
        ),
        ("gateway", keys_of::<unspoof_gateway::GatewayConfig>()),
        ("gateway.limits", keys_of::<unspoof_gateway::Limits>()),
        ("gateway.users", keys_of::<unspoof_gateway::UserConfig>()),
        ("gateway.dkim", keys_of::<unspoof_gateway::DkimKeyConfig>()),
        ("milter", keys_of::<unspoof_milter::MilterConfig>()),
        ("milter.limits", keys_of::<unspoof_milter::Limits>()),
        ("store", keys_of::<unspoof_store::StoreConfig>()),
        ("dmarc", keys_of::<unspoof_reports::DmarcConfig>()),
    ];
    let mut missing = Vec::new();
    for (path, keys) in &sections {
        let present: BTreeSet<String> = table(&file, path).keys().cloned().collect();
        for k in keys.difference(&present) {
            missing.push(format!("[{path}] {k}"));
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from examples/unspoof.toml: {missing:?}"
    );

    // What the comments document is valid too: `unspoof policy check` reads every section.
    let dir = std::env::temp_dir().join(format!("unspoof-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("uncommented.toml");
    std::fs::write(&path, &full).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The probe itself: it sees the fields of a type, and the key check fails when the example
/// lacks one.
#[test]
fn the_key_probe_finds_a_missing_key() {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        a: u8,
        b_c: String,
    }
    assert_eq!(
        keys_of::<Two>(),
        BTreeSet::from(["a".to_string(), "b_c".to_string()])
    );
    let t: toml::Table = uncommented("a = 1\n# b_c = \"x\"\n# Not a key: words = more words\n")
        .parse()
        .unwrap();
    assert_eq!(t.len(), 2, "{t:?}");
    let t: toml::Table = uncommented("a = 1\n# b_c is described here\n")
        .parse()
        .unwrap();
    assert!(!t.contains_key("b_c"));
}

#[test]
fn the_example_policy_passes_the_genuine_sample_and_refuses_the_spoof() {
    let run = |sample: &str| {
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["analyze", "--policy"])
            .arg(examples("unspoof.toml"))
            .arg("--dns-zone")
            .arg(examples("sample.zone"))
            .arg(examples(sample))
            .output()
            .unwrap()
    };
    let genuine = run("sample-genuine.eml");
    let said = String::from_utf8_lossy(&genuine.stdout);
    assert_eq!(genuine.status.code(), Some(0), "{said}");
    let spoof = run("sample-spoof.eml");
    let said = String::from_utf8_lossy(&spoof.stdout);
    assert_eq!(spoof.status.code(), Some(3), "{said}");
    // And the file is valid as it stands.
    let check = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["policy", "check"])
        .arg(examples("unspoof.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
