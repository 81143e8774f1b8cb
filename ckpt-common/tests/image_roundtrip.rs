//! Round trips: what the encoder or the writer produces, the decoder and the reader
//! give back unchanged, and the files on disk have the promised shape and permissions.
#![cfg(feature = "user")]

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use bytes::BytesMut;
use ckpt_common::image::{
    AlignedPages, FORMAT_VERSION, IMAGE_FILE, Image, ImageError, ImageWriter, MAGIC, PAGES_FILE,
    PagesFile, Record,
};
use common::{PAGE, Rng, frames, header, random_record, sample_image, sample_records, scratch};

#[test]
fn sample_image_round_trips_and_validates() {
    let (image, _) = sample_image();
    image.validate().expect("the sample is a valid image");
    let bytes = image.encode();
    let decoded = Image::decode(&bytes).expect("decodes");
    assert_eq!(decoded, image);
    assert_eq!(decoded.encode(), bytes, "encoding is canonical");
}

#[test]
fn random_records_round_trip_byte_for_byte() {
    for seed in 0..3000u64 {
        let mut rng = Rng::new(seed);
        let record = random_record(&mut rng);
        let mut payload = BytesMut::new();
        record.encode_payload(&mut payload);
        let decoded = Record::decode_payload(record.record_type() as u16, &payload)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(decoded, record, "seed {seed}");
        let mut again = BytesMut::new();
        decoded.encode_payload(&mut again);
        assert_eq!(again, payload, "seed {seed}: re-encoding differs");
    }
}

#[test]
fn record_offsets_point_at_each_records_frame() {
    let (image, _) = sample_image();
    let bytes = image.encode();
    let frames = frames(&bytes);
    let offsets = image.record_offsets();
    assert_eq!(offsets.len(), image.records.len());
    for (i, (offset, record)) in offsets.iter().zip(&image.records).enumerate() {
        assert_eq!(*offset as usize, frames[i].start, "record #{i}");
        let rtype = u16::from_le_bytes([bytes[frames[i].start], bytes[frames[i].start + 1]]);
        assert_eq!(rtype, record.record_type() as u16, "record #{i}");
    }
    // The last frame is the tail.
    let tail = frames.last().unwrap();
    assert_eq!(&bytes[tail.start..tail.start + 2], &0xffffu16.to_le_bytes());
    assert_eq!(tail.end, bytes.len());
}

#[test]
fn header_starts_with_magic_and_version() {
    let (image, _) = sample_image();
    let bytes = image.encode();
    assert_eq!(bytes[..8], MAGIC);
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
}

#[test]
fn writer_output_opens_to_the_same_image() {
    let scratch = scratch("writer");
    let dir = scratch.image_dir();
    let mut writer = ImageWriter::create(&dir, &header()).unwrap();
    let mut written: Vec<Vec<u8>> = Vec::new();
    let records = sample_records(|index, data| {
        written.push(data.to_vec());
        writer.write_pages(index, data).unwrap()
    });
    for r in &records {
        writer.write(r).unwrap();
    }
    writer.finish().unwrap();

    let image = Image::open(&dir).expect("the written image opens");
    let (expected, expected_pages) = sample_image();
    assert_eq!(
        image, expected,
        "same records and runs as the in-memory encoding"
    );
    assert_eq!(fs::read(dir.join(IMAGE_FILE)).unwrap(), expected.encode());
    assert_eq!(fs::read(dir.join(PAGES_FILE)).unwrap(), expected_pages);
    assert_eq!(
        image.verify_pages(&dir).unwrap(),
        expected_pages.len() as u64
    );

    // Every run reads back the bytes written for it, at a page-aligned offset.
    let pages = PagesFile::open(&dir, PAGE as u32).unwrap();
    let runs: Vec<_> = image
        .records
        .iter()
        .flat_map(|r| match r {
            Record::MemoryArea(a) => a.pages.clone(),
            Record::SharedMemory(s) => s.pages.clone(),
            _ => vec![],
        })
        .collect();
    let mut runs_sorted = runs.clone();
    runs_sorted.sort_by_key(|r| r.offset);
    assert_eq!(runs_sorted.len(), written.len());
    for (run, data) in runs_sorted.iter().zip(&written) {
        assert_eq!(run.offset % PAGE, 0);
        let mut buf = vec![0; pages.run_bytes(run) as usize];
        pages.read_run(run, &mut buf).unwrap();
        assert_eq!(&buf, data);
    }
}

#[test]
fn runs_of_every_size_and_alignment_read_back_in_order() {
    // The writer gathers small runs and writes large aligned ones directly: mix small,
    // unaligned, stage-filling and large runs so that every path and the boundaries
    // between them are crossed, then read each run back.
    let scratch = scratch("mixed-runs");
    let dir = scratch.image_dir();
    let mut writer = ImageWriter::create(&dir, &header()).unwrap();
    let page = PAGE as usize;
    let mut rng = Rng::new(7);
    let mut written = Vec::new();
    for pages in [1, 3, 1000, 30, 512, 2048, 1, 1023, 1025, 5, 700] {
        // Every other run from a page-aligned buffer, the others one byte off.
        let mut aligned = AlignedPages::default();
        let mut backing = vec![0u8; pages * page + 1];
        let data = if written.len() % 2 == 0 {
            aligned.resize(pages * page)
        } else {
            &mut backing[1..1 + pages * page]
        };
        data.iter_mut().for_each(|b| *b = rng.next() as u8);
        let run = writer.write_pages(written.len() as u64, data).unwrap();
        written.push((run, data.to_vec()));
    }
    writer.finish().unwrap();
    let total: usize = written.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(
        fs::metadata(dir.join(PAGES_FILE)).unwrap().len(),
        total as u64
    );
    let pages = PagesFile::open(&dir, PAGE as u32).unwrap();
    let mut offset = 0;
    for (run, data) in &written {
        assert_eq!(run.offset, offset, "runs are laid out in the order written");
        let mut buf = vec![0; data.len()];
        pages.read_run(run, &mut buf).unwrap();
        assert!(buf == *data, "run at offset {} reads back", run.offset);
        offset += data.len() as u64;
    }
}

#[test]
fn image_directory_is_0700_and_files_are_0600() {
    let scratch = scratch("modes");
    let dir = scratch.image_dir();
    let (image, _) = sample_image();
    let mut writer = ImageWriter::create(&dir, &image.header).unwrap();
    writer.write(&image.records[0]).unwrap();
    writer.finish().unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(IMAGE_FILE)), 0o600);
    assert_eq!(mode(&dir.join(PAGES_FILE)), 0o600);
}

#[test]
fn writer_takes_an_existing_empty_directory_and_restricts_it() {
    let scratch = scratch("empty");
    let dir = scratch.image_dir();
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    ImageWriter::create(&dir, &header())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn writer_refuses_a_non_empty_directory_and_names_it() {
    let scratch = scratch("nonempty");
    let dir = scratch.image_dir();
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("old"), b"x").unwrap();
    let err = ImageWriter::create(&dir, &header()).unwrap_err();
    assert!(matches!(err, ImageError::DirNotEmpty(_)), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    assert_eq!(
        fs::read(dir.join("old")).unwrap(),
        b"x",
        "nothing was touched"
    );
}

#[test]
fn writer_refuses_a_path_that_is_a_file() {
    let scratch = scratch("file");
    let path = scratch.path().join("plain");
    fs::write(&path, b"x").unwrap();
    let err = ImageWriter::create(&path, &header()).unwrap_err();
    assert!(matches!(err, ImageError::NotADirectory(_)), "{err}");
}

#[test]
fn an_unfinished_image_is_rejected_as_truncated() {
    let scratch = scratch("unfinished");
    let dir = scratch.image_dir();
    let (image, _) = sample_image();
    let mut writer = ImageWriter::create(&dir, &image.header).unwrap();
    writer.write(&image.records[0]).unwrap();
    drop(writer);
    let err = Image::open(&dir).unwrap_err();
    assert!(matches!(err, ImageError::Tail(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// Writes the sample image into `dir` through the writer.
fn write_sample(dir: &std::path::Path) {
    let mut writer = ImageWriter::create(dir, &header()).unwrap();
    let records = sample_records(|index, data| writer.write_pages(index, data).unwrap());
    for r in &records {
        writer.write(r).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn a_pages_file_of_the_wrong_length_is_rejected() {
    let scratch = scratch("pageslen");
    let dir = scratch.image_dir();
    write_sample(&dir);
    fs::write(dir.join(PAGES_FILE), vec![0; PAGE as usize]).unwrap();
    let err = Image::open(&dir).unwrap_err();
    assert!(matches!(err, ImageError::Pages(_)), "{err}");
}

#[test]
fn corrupt_page_contents_are_found_and_the_record_named() {
    let scratch = scratch("pagecrc");
    let dir = scratch.image_dir();
    write_sample(&dir);
    // Flip one byte in the heap's second run (pages.img offset 3 pages in).
    let mut bad = fs::read(dir.join(PAGES_FILE)).unwrap();
    bad[3 * PAGE as usize + 17] ^= 0x40;
    fs::write(dir.join(PAGES_FILE), &bad).unwrap();
    let image = Image::open(&dir).expect("records are intact");
    let err = image.verify_pages(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("record #5 (memory-area"), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
}

#[test]
fn a_future_format_version_is_refused_by_number() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = Image::decode(&bytes).unwrap_err();
    assert!(
        matches!(err, ImageError::Version { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
}

#[test]
fn not_an_image_is_said_plainly() {
    let err = Image::decode(b"#!/bin/sh\necho hello world\n").unwrap_err();
    assert!(err.to_string().contains("not a ckpt image"), "{err}");
}
