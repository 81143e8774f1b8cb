//! How long a record takes to encode and decode: fd, open-file and inode records are
//! the most numerous, and records are written in the freeze window of a dump. A measurement,
//! not a check (timings on a shared machine prove nothing), so it is ignored by
//! default:
//!
//! `cargo test --release -p ckpt-common --test record_codec_speed -- --ignored --nocapture`
#![cfg(feature = "user")]

mod common;

use std::{hint::black_box, path::PathBuf, time::Instant};

use bytes::BytesMut;
use ckpt_common::image::{
    FdRecord, FileOwner, Image, InodeKind, InodeRecord, ObjRef, OpenFileRecord, Record,
};
use common::header;

const RECORDS: usize = 30_000;
const ROUNDS: usize = 5;

fn fd_records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            Record::Fd(FdRecord {
                pid: 1000 + (i / 100) as i32,
                fd: (i % 100) as i32,
                file: ObjRef(i as u32 + 1),
                cloexec: i % 2 == 0,
            })
        })
        .collect()
}

fn open_file_records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            Record::OpenFile(OpenFileRecord {
                objref: ObjRef(2 * i as u32 + 2),
                inode: ObjRef(2 * i as u32 + 1),
                flags: 0o100002,
                mode: 3,
                pos: (i * 4096) as i64,
                owner: (i % 10 == 0).then_some(FileOwner {
                    pid: 1000,
                    kind: 1,
                    sig: 0,
                }),
                path: PathBuf::from(format!("/var/lib/service/data/segment-{i:06}.log")),
            })
        })
        .collect()
}

fn inode_records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            Record::Inode(InodeRecord {
                objref: ObjRef(2 * i as u32 + 1),
                kind: InodeKind::Regular {
                    path: PathBuf::from(format!("/var/lib/service/data/segment-{i:06}.log")),
                    size: 1 << 20,
                    mtime_ns: 1_700_000_000_000_000_000 + i as i64,
                    ino: 100_000 + i as u64,
                    dev: 0x803,
                },
            })
        })
        .collect()
}

/// The best of `ROUNDS` runs of `f` over `RECORDS` records, in ns per record.
fn best_ns(mut f: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / RECORDS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn fd_open_file_and_inode_records_encode_and_decode_speed() {
    for (name, records) in [
        ("fd", fd_records()),
        ("open-file", open_file_records()),
        ("inode (file)", inode_records()),
    ] {
        let rtype = records[0].record_type() as u16;
        let mut buf = BytesMut::new();
        let mut bytes = 0;
        let encode = best_ns(|| {
            bytes = 0;
            for r in &records {
                buf.clear();
                r.encode_payload(&mut buf);
                bytes += buf.len();
            }
        });
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                let mut b = BytesMut::new();
                r.encode_payload(&mut b);
                b.to_vec()
            })
            .collect();
        let decode = best_ns(|| {
            for p in &payloads {
                black_box(Record::decode_payload(rtype, p).expect("decodes"));
            }
        });
        let image = Image {
            header: header(),
            records,
            pages_len: 0,
        };
        let mut encoded = Vec::new();
        let image_encode = best_ns(|| encoded = image.encode());
        let image_decode = best_ns(|| {
            black_box(Image::decode(&encoded).expect("decodes"));
        });
        eprintln!(
            "{name}: payload encode {encode:.0} ns/record, decode {decode:.0} ns/record, \
             {} bytes/record; framed (Image::encode/decode) {image_encode:.0} / \
             {image_decode:.0} ns/record",
            bytes / RECORDS
        );
    }
}
