//! docs/IMAGE.md is checked from the declarations: every key a record's payload
//! actually encodes (at any depth, for every kind of inode, area and seccomp mode),
//! and every name a kind or name field takes, appears in backticks in that record's
//! section ("### CODE NAME"). A field added to a declaration without a line in
//! IMAGE.md fails here.
#![cfg(feature = "user")]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use ckpt_common::image::Record;
use common::{Rng, random_record, sample_image};
use rmpv::Value;

/// Keys that name a kind or a name: their string values are documented too.
const NAMED: [&str; 3] = ["kind", "mode", "state"];

/// Every map key under `v`, and the string values of the `NAMED` keys.
fn collect(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = k.as_str().expect("every key is a field name").to_string();
                if NAMED.contains(&key.as_str())
                    && let Some(name) = v.as_str()
                {
                    out.insert(name.to_string());
                }
                out.insert(key);
                collect(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// The section of IMAGE.md that documents `record`.
fn section<'a>(doc: &'a str, record: &Record) -> &'a str {
    let heading = format!(
        "\n### {} {}\n",
        record.record_type() as u16,
        record.record_type().name()
    );
    let start = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("IMAGE.md has no section {heading:?}"));
    let body = &doc[start + heading.len()..];
    let end = body.find("\n#").unwrap_or(body.len());
    &body[..end]
}

#[test]
fn image_md_documents_every_field_every_record_encodes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/IMAGE.md"))
        .expect("docs/IMAGE.md");
    // The sample image has every record type; random records every kind of each, with
    // and without their optional parts.
    let mut records = sample_image().0.records;
    let mut rng = Rng::new(0xd0c);
    records.extend((0..5000).map(|_| random_record(&mut rng)));
    let mut keys: BTreeMap<&'static str, (Record, BTreeSet<String>)> = BTreeMap::new();
    for record in records {
        let mut payload = BytesMut::new();
        record.encode_payload(&mut payload);
        let value = rmpv::decode::read_value(&mut &payload[..]).expect("a payload is MessagePack");
        assert!(value.is_map(), "a payload is one map: {value}");
        let entry = keys
            .entry(record.record_type().name())
            .or_insert_with(|| (record.clone(), BTreeSet::new()));
        collect(&value, &mut entry.1);
    }
    assert_eq!(
        keys.len(),
        14,
        "every record type was seen: {:?}",
        keys.keys()
    );
    let mut missing = Vec::new();
    for (name, (record, keys)) in &keys {
        let text = section(&doc, record);
        missing.extend(
            keys.iter()
                .filter(|k| !text.contains(&format!("`{k}`")))
                .map(|k| format!("{name}: `{k}`")),
        );
    }
    assert!(
        missing.is_empty(),
        "IMAGE.md does not document these fields (in backticks, in the record's \
         section): {missing:#?}"
    );
}
