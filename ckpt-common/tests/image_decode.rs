//! The record decoder's rules beyond shape (image_fuzz covers shape): what it
//! tolerates (unknown fields, missing defaulted fields) and what it still refuses as
//! the old fixed-layout decoder did (objref 0, a non-bool, an unknown kind or name, a
//! missing field), each refusal naming the field.
#![cfg(feature = "user")]

mod common;

use bytes::BytesMut;
use std::{ffi::OsString, os::unix::ffi::OsStringExt, path::PathBuf};

use ckpt_common::image::{
    FORMAT_VERSION, FdRecord, Image, InodeKind, InodeRecord, MemoryAreaRecord, ObjRef,
    OpenFileRecord, Record, RecordType,
};
use common::{frames, reseal, sample_image};
use rmpv::Value;

fn payload(record: &Record) -> Vec<u8> {
    let mut out = BytesMut::new();
    record.encode_payload(&mut out);
    out.to_vec()
}

/// `record`'s payload with `edit` applied to its map (a writer other than this ckpt).
fn edited(record: &Record, edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let mut value = rmpv::decode::read_value(&mut &payload(record)[..]).unwrap();
    let Value::Map(entries) = &mut value else {
        panic!("a payload is a map")
    };
    edit(entries);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value).unwrap();
    out
}

/// The value of `key` in `entries`.
fn field<'a>(entries: &'a mut [(Value, Value)], key: &str) -> &'a mut Value {
    &mut entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(key))
        .unwrap_or_else(|| panic!("no field {key}"))
        .1
}

fn refused(record: &Record, bytes: &[u8]) -> String {
    Record::decode_payload(record.record_type() as u16, bytes)
        .expect_err("the edit is refused")
        .to_string()
}

fn sample_record(f: impl Fn(&Record) -> bool) -> Record {
    sample_image().0.records.into_iter().find(f).unwrap()
}

fn fd() -> Record {
    Record::Fd(FdRecord {
        pid: 100,
        fd: 3,
        file: ObjRef(7),
        cloexec: true,
    })
}

#[test]
fn unknown_fields_are_skipped_and_missing_defaulted_fields_take_their_default() {
    let record = fd();
    let newer = edited(&record, |m| {
        m.push(("added_later".into(), Value::from(42)));
        m.push(("more".into(), Value::Array(vec![Value::Nil, "x".into()])));
    });
    assert_eq!(Record::decode_payload(7, &newer).unwrap(), record);

    // `creds` is a container whose fields all default: a missing one is 0.
    let process = sample_record(|r| matches!(r, Record::Process(_)));
    let without_uid = edited(&process, |m| {
        let Value::Map(creds) = field(m, "creds") else {
            panic!("creds is a map")
        };
        creds.retain(|(k, _)| k.as_str() != Some("euid"));
    });
    let Record::Process(mut expected) = process.clone() else {
        unreachable!()
    };
    expected.creds.euid = 0;
    assert_eq!(
        Record::decode_payload(1, &without_uid).unwrap(),
        Record::Process(expected)
    );
}

#[test]
fn a_missing_field_without_a_default_is_named() {
    let record = fd();
    let err = refused(
        &record,
        &edited(&record, |m| m.retain(|(k, _)| k.as_str() != Some("pid"))),
    );
    assert!(err.contains("missing field `pid`"), "{err}");
}

#[test]
fn objref_0_is_refused_naming_the_field() {
    let record = fd();
    let err = refused(&record, &edited(&record, |m| *field(m, "file") = 0.into()));
    assert_eq!(err, "file: objref 0 (objrefs start at 1)");
    let seccomp = sample_record(|r| matches!(r, Record::SeccompFilter(_)));
    let err = refused(
        &seccomp,
        &edited(&seccomp, |m| *field(m, "parent") = 0.into()),
    );
    assert!(err.contains("objref 0"), "{err}");
}

#[test]
fn a_bool_must_be_a_bool_and_an_integer_must_fit() {
    let record = fd();
    let err = refused(
        &record,
        &edited(&record, |m| *field(m, "cloexec") = 1.into()),
    );
    assert!(
        err.starts_with("cloexec: invalid type: integer `1`, expected a boolean"),
        "{err}"
    );
    let err = refused(
        &record,
        &edited(&record, |m| *field(m, "fd") = Value::from(1u64 << 40)),
    );
    assert!(err.starts_with("fd: invalid value: integer"), "{err}");
}

#[test]
fn an_unknown_kind_or_name_is_refused() {
    let process = sample_record(|r| matches!(r, Record::Process(_)));
    let err = refused(
        &process,
        &edited(&process, |m| *field(m, "state") = "sleeping".into()),
    );
    assert!(
        err.starts_with("state: unknown variant `sleeping`, expected `running` or `zombie`"),
        "{err}"
    );
    let pipe = sample_record(|r| {
        matches!(
            r,
            Record::Inode(InodeRecord {
                kind: InodeKind::Pipe { .. },
                ..
            })
        )
    });
    let err = refused(&pipe, &edited(&pipe, |m| *field(m, "kind") = "pype".into()));
    assert!(err.contains("unknown variant `pype`"), "{err}");
    let area = sample_record(|r| matches!(r, Record::MemoryArea(MemoryAreaRecord { .. })));
    // (serde also takes a kind by its index in the declaration: in range or refused)
    let err = refused(&area, &edited(&area, |m| *field(m, "kind") = 99.into()));
    assert!(
        err.contains("integer `99`, expected variant index"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_deep_in_a_record_is_named_by_its_path() {
    let process = sample_record(|r| matches!(r, Record::Process(_)));
    let err = refused(
        &process,
        &edited(&process, |m| {
            let Value::Map(attrs) = field(m, "attrs") else {
                panic!("attrs is a map")
            };
            let Value::Array(itimers) = field(attrs, "itimers") else {
                panic!("itimers is an array")
            };
            let Value::Map(timer) = &mut itimers[1] else {
                panic!("an itimer is a map")
            };
            *field(timer, "value_us") = "soon".into();
        }),
    );
    assert!(
        err.starts_with("attrs.itimers[1].value_us: wrong msgpack marker"),
        "{err}"
    );
}

#[test]
fn a_decode_error_names_the_record_and_the_field() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    let f = frames(&bytes)[13].clone();
    assert_eq!(image.records[13].record_type(), RecordType::Fd);
    let bad = edited(&image.records[13], |m| *field(m, "file") = "x".into());
    bytes.splice(f.start + 8..f.end - 4, bad.iter().copied());
    bytes[f.start + 4..f.start + 8].copy_from_slice(&(bad.len() as u32).to_le_bytes());
    reseal(&mut bytes);
    let err = Image::decode(&bytes).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "record #13 (fd, type 7) at byte {}: file: wrong msgpack marker",
            f.start
        )),
        "{err}"
    );
}

#[test]
fn an_image_of_another_format_version_is_refused_saying_both() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
    let err = Image::decode(&bytes).unwrap_err().to_string();
    assert_eq!(FORMAT_VERSION, 5);
    assert!(
        err.starts_with("image format 4, this ckpt reads 5: "),
        "{err}"
    );
}

/// A path that is not UTF-8 and a blob, in an open file and a fifo.
fn binary_records() -> [Record; 2] {
    let path = PathBuf::from(OsString::from_vec(b"/tmp/caf\xe9".to_vec()));
    [
        Record::OpenFile(OpenFileRecord {
            objref: ObjRef(2),
            inode: ObjRef(1),
            flags: 0,
            mode: 1,
            pos: 0,
            owner: None,
            path: path.clone(),
        }),
        Record::Inode(InodeRecord {
            objref: ObjRef(1),
            kind: InodeKind::Fifo {
                path,
                pipe_size: 4096,
                data: vec![0xab, 0x01],
            },
        }),
    ]
}

#[test]
fn paths_and_blobs_are_bins_of_their_exact_bytes_in_the_image() {
    for record in binary_records() {
        let bytes = payload(&record);
        // bin8 (0xc4), length, bytes: not a string, not an array of ints.
        let path = b"\xa4path\xc4\x09/tmp/caf\xe9";
        assert!(bytes.windows(path.len()).any(|w| w == path), "{bytes:02x?}");
        assert_eq!(
            Record::decode_payload(record.record_type() as u16, &bytes).unwrap(),
            record
        );
    }
    let fifo = payload(&binary_records()[1]);
    let data = b"\xa4data\xc4\x02\xab\x01";
    assert!(fifo.windows(data.len()).any(|w| w == data), "{fifo:02x?}");
}

#[test]
fn show_json_keeps_paths_as_strings_and_blobs_as_hex() {
    let [open, fifo] = binary_records();
    // The byte that is not UTF-8 shows as U+FFFD, as `ckpt show --json` always printed.
    assert_eq!(
        serde_json::to_string(&open).unwrap(),
        "{\"record\":\"open-file\",\"objref\":2,\"inode\":1,\"flags\":0,\"mode\":1,\"pos\":0,\
         \"owner\":null,\"path\":\"/tmp/caf\u{fffd}\"}"
    );
    assert_eq!(
        serde_json::to_string(&fifo).unwrap(),
        "{\"record\":\"inode\",\"objref\":1,\"kind\":\"fifo\",\"path\":\"/tmp/caf\u{fffd}\",\
         \"pipe_size\":4096,\"data\":\"ab01\"}"
    );
}
