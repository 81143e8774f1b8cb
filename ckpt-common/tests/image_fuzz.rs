//! The decoder never trusts the image: a bounded-time mutation fuzzer.
//!
//! Two attackers, each run for a couple of seconds from fixed seeds (a failure prints
//! the seed that reproduces it):
//!
//! - *corruption*: bit flips, truncations, splices of frames from another image,
//!   duplicated, dropped and swapped records, random overwrites and insertions. Every
//!   mutated image must be refused with an error (checksums and the tail catch all of
//!   them), never a panic.
//! - *a hostile writer*: the same payload mutations, but every checksum is recomputed
//!   afterwards, so the payload decoders and the validation pass face the bytes
//!   directly. They may accept or refuse, but must not panic, must not allocate far
//!   beyond the input, and whatever they accept is one image: its encoding decodes to
//!   the same image and encodes to the same bytes again. (The accepted bytes need not
//!   be ckpt's own encoding of it: the decoder skips unknown fields and gives missing
//!   fields with a default their default, as a newer or older writer needs.)
#![cfg(feature = "user")]

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use ckpt_common::image::{Image, ImageError};
use common::{Rng, frames, header, random_record, reseal, sample_image};

/// How long each fuzz test runs and at most how many cases: 2.5 s and 200 000 cases,
/// or `CKPT_FUZZ_SECS` seconds with no case limit for a longer hunt.
fn budget() -> (Duration, u64) {
    match std::env::var("CKPT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(secs) => (Duration::from_secs(secs), u64::MAX),
        None => (Duration::from_millis(2500), 200_000),
    }
}

/// Records the largest single allocation made by the current thread, so a test can
/// check that decoding never allocates far beyond the bytes it was given.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Decodes (and, if that succeeds, validates) `bytes`, turning a panic into a test
/// failure that names `seed`, and checking the largest allocation against the input.
fn decode_checked(bytes: &[u8], seed: u64, what: &str) -> Result<Image, ImageError> {
    LARGEST.with(|l| l.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let image = Image::decode(bytes)?;
        let _ = image.validate();
        Ok(image)
    }))
    .unwrap_or_else(|_| panic!("{what}, seed {seed}: the decoder panicked"));
    let largest = LARGEST.with(|l| l.get());
    assert!(
        largest <= 64 * bytes.len() + 65536,
        "{what}, seed {seed}: a {largest}-byte allocation for a {}-byte image",
        bytes.len()
    );
    result
}

/// The images the mutations start from: the consistent sample, and images of random
/// (inconsistent) records that exercise every field of every kind.
fn bases() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(0xba5e);
    let mut out = vec![sample_image().0.encode()];
    for _ in 0..7 {
        let random = Image {
            header: header(),
            records: (0..12).map(|_| random_record(&mut rng)).collect(),
            pages_len: rng.next() >> 20,
        };
        out.push(random.encode());
    }
    out
}

/// Changes bytes inside record payloads only (frames stay well-formed).
fn mutate_payloads(rng: &mut Rng, bytes: &mut [u8]) {
    let all = frames(bytes);
    let records = &all[..all.len() - 1];
    for _ in 0..1 + rng.below(4) {
        let f = &records[rng.below(records.len())];
        let payload = f.start + 8..f.end - 4;
        if payload.is_empty() {
            continue;
        }
        let at = payload.start + rng.below(payload.len());
        match rng.below(4) {
            // A byte flip.
            0 => bytes[at] ^= 1 << rng.below(8),
            // A random byte.
            1 => bytes[at] = rng.next() as u8,
            // A large little-endian u32 (a hostile length or count).
            2 => {
                let end = (at + 4).min(payload.end);
                let v = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff][rng.below(6)..].to_vec();
                for (i, b) in (at..end).zip(v.into_iter().chain(std::iter::repeat(0xff))) {
                    bytes[i] = b;
                }
            }
            // A small value (counts of 1, tags, zero objrefs).
            _ => bytes[at] = rng.below(3) as u8,
        }
    }
}

/// Moves whole frames around: duplicate, drop, swap, or splice one in from `donor`.
fn shuffle_frames(rng: &mut Rng, bytes: &mut Vec<u8>, donor: &[u8]) {
    let all = frames(bytes);
    let records = &all[..all.len() - 1];
    let pick = records[rng.below(records.len())].clone();
    let other = records[rng.below(records.len())].clone();
    match rng.below(4) {
        0 => {
            let copy = bytes[pick.clone()].to_vec();
            bytes.splice(other.start..other.start, copy);
        }
        1 => {
            bytes.drain(pick);
        }
        2 if pick.start < other.start => {
            let (a, b) = (bytes[pick.clone()].to_vec(), bytes[other.clone()].to_vec());
            bytes.splice(other, a);
            bytes.splice(pick, b);
        }
        _ => {
            let donor_frames = frames(donor);
            let d = donor_frames[rng.below(donor_frames.len() - 1)].clone();
            bytes.splice(pick, donor[d].to_vec());
        }
    }
}

/// Damage as storage or transfer would do it; the checksums must catch all of it.
fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>, donor: &[u8]) {
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] ^= (1 + rng.below(255)) as u8;
            }
        }
        1 => bytes.truncate(rng.below(bytes.len())),
        2 => shuffle_frames(rng, bytes, donor),
        3 => {
            // Overwrite a random range with random bytes.
            let at = rng.below(bytes.len());
            let n = 1 + rng.below(32).min(bytes.len() - at - 1);
            for b in &mut bytes[at..at + n] {
                *b = rng.next() as u8;
            }
        }
        4 => {
            // Splice a random slice of the donor in at a random position.
            let from = rng.below(donor.len());
            let n = rng.below(64).min(donor.len() - from);
            let at = rng.below(bytes.len());
            bytes.splice(at..at, donor[from..from + n].iter().copied());
        }
        _ => mutate_payloads(rng, bytes),
    }
}

#[test]
fn corrupted_truncated_and_spliced_images_are_refused_never_panicking() {
    let bases = bases();
    let (budget, max_cases) = budget();
    let start = Instant::now();
    let mut cases = 0u64;
    while cases < max_cases && start.elapsed() < budget {
        let seed = cases;
        let mut rng = Rng::new(seed);
        let original = &bases[rng.below(bases.len())];
        let donor = &bases[rng.below(bases.len())];
        let mut bytes = original.clone();
        corrupt(&mut rng, &mut bytes, donor);
        if &bytes != original {
            let result = decode_checked(&bytes, seed, "corruption");
            assert!(
                result.is_err(),
                "corruption, seed {seed}: a damaged image decoded"
            );
        }
        cases += 1;
    }
    assert!(cases >= 1000, "only {cases} cases ran in {budget:?}");
    eprintln!("corruption: {cases} cases");
}

#[test]
fn a_hostile_writer_with_valid_checksums_cannot_make_the_decoder_panic() {
    let bases = bases();
    let (budget, max_cases) = budget();
    let start = Instant::now();
    let mut cases = 0u64;
    let mut accepted = 0u64;
    while cases < max_cases && start.elapsed() < budget {
        let seed = 1 << 32 | cases;
        let mut rng = Rng::new(seed);
        let mut bytes = bases[rng.below(bases.len())].clone();
        if rng.below(4) == 0 {
            let donor = &bases[rng.below(bases.len())];
            shuffle_frames(&mut rng, &mut bytes, donor);
        }
        mutate_payloads(&mut rng, &mut bytes);
        reseal(&mut bytes);
        if let Ok(image) = decode_checked(&bytes, seed, "hostile") {
            accepted += 1;
            let canonical = image.encode();
            let again = Image::decode(&canonical)
                .unwrap_or_else(|e| panic!("hostile, seed {seed}: the re-encoding fails: {e}"));
            assert_eq!(
                again, image,
                "hostile, seed {seed}: re-encoding changes the image"
            );
            assert_eq!(
                again.encode(),
                canonical,
                "hostile, seed {seed}: the re-encoding is not canonical"
            );
        }
        cases += 1;
    }
    assert!(cases >= 1000, "only {cases} cases ran in {budget:?}");
    eprintln!("hostile: {cases} cases, {accepted} decodable");
}

/// Replaces the first `find` in the payload of frame `index` with `with`, fixes the
/// frame's length and reseals the image (a hostile writer's edit); returns where the
/// frame starts.
fn replace_in_payload(bytes: &mut Vec<u8>, index: usize, find: &[u8], with: &[u8]) -> usize {
    let f = frames(bytes)[index].clone();
    let payload = f.start + 8..f.end - 4;
    let at = payload.start
        + bytes[payload.clone()]
            .windows(find.len())
            .position(|w| w == find)
            .unwrap_or_else(|| panic!("frame {index} has no {find:02x?}"));
    bytes.splice(at..at + find.len(), with.iter().copied());
    let len = (payload.len() + with.len() - find.len()) as u32;
    bytes[f.start + 4..f.start + 8].copy_from_slice(&len.to_le_bytes());
    reseal(bytes);
    f.start
}

#[test]
fn a_huge_count_is_refused_by_the_record_that_holds_it() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    // The text area (record #4) is a file mapping with one page run: `pages` is a
    // one-element list (fixarray 0x91); it now claims 2^32 - 1 elements.
    let start = replace_in_payload(
        &mut bytes,
        4,
        b"\xa5pages\x91",
        b"\xa5pages\xdd\xff\xff\xff\xff",
    );
    let err = decode_checked(&bytes, 0, "huge count")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("record #4 (memory-area, type 3) at byte {start}")),
        "{err}"
    );
    assert!(
        err.contains("pages: at payload byte") && err.contains("a list of 4294967295 elements"),
        "{err}"
    );
}

#[test]
fn a_huge_blob_length_is_refused_by_the_record_that_holds_it() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    // The main thread's `regs`: a bin8 of 216 bytes, now a bin32 claiming 4 GiB - 16.
    replace_in_payload(
        &mut bytes,
        1,
        b"\xa4regs\xc4\xd8",
        b"\xa4regs\xc6\xff\xff\xff\xf0",
    );
    let err = decode_checked(&bytes, 0, "huge blob")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("record #1 (thread, type 2)"), "{err}");
    assert!(err.contains("regs: at payload byte"), "{err}");
    assert!(err.contains("a bin of 4294967280 bytes"), "{err}");
}

#[test]
fn a_few_bytes_claiming_4_gib_or_4_g_elements_are_refused_without_allocating() {
    let (image, _) = sample_image();
    let claims: [(&str, &[u8], &str); 6] = [
        ("bin", b"\xc6\xff\xff\xff\xff", "a bin of 4294967295 bytes"),
        (
            "string",
            b"\xdb\xff\xff\xff\xff",
            "a string of 4294967295 bytes",
        ),
        (
            "list",
            b"\xdd\xff\xff\xff\xff",
            "a list of 4294967295 elements",
        ),
        (
            "map",
            b"\xdf\xff\xff\xff\xff",
            "a map of 4294967295 entries",
        ),
        // A field of an fd record (a list of lists would do the same, deeper down).
        (
            "field",
            b"\x81\xa3pid\xdd\xff\xff\xff\xff\x00",
            "pid: at payload byte 5: a list of 4294967295 elements",
        ),
        (
            "element",
            b"\x81\xa3pid\x91\xc6\xff\xff\xff\xff",
            "pid[0]: at payload byte 6: a bin of 4294967295 bytes",
        ),
    ];
    for (what, payload, said) in claims {
        // As the payload of the 14th record, an fd (every record type decodes through
        // the same check first).
        let mut bytes = image.encode();
        let f = frames(&bytes)[13].clone();
        bytes.splice(f.start + 8..f.end - 4, payload.iter().copied());
        bytes[f.start + 4..f.start + 8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        reseal(&mut bytes);
        let err = decode_checked(&bytes, 0, what).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("record #13 (fd, type 7) at byte {}", f.start)),
            "{what}: {err}"
        );
        assert!(err.contains(said), "{what}: {err}");
    }
}

#[test]
fn a_frame_length_past_the_end_is_refused_without_reading_it() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    let f = frames(&bytes)[2].clone();
    bytes[f.start + 4..f.start + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_checked(&bytes, 0, "frame length")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("record #2 (thread, type 2) at byte {}", f.start)),
        "{err}"
    );
    assert!(err.contains("runs past the end"), "{err}");
}

#[test]
fn a_flipped_byte_is_reported_as_the_checksum_of_its_record() {
    let (image, _) = sample_image();
    let mut bytes = image.encode();
    let f = frames(&bytes)[10].clone(); // the pipe's inode
    bytes[f.end - 7] ^= 0x20; // inside its buffered data
    let err = decode_checked(&bytes, 0, "flip").unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("record #10 (inode, type 5) at byte {}", f.start)),
        "{err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_record_spliced_in_from_another_image_is_caught_by_the_tail() {
    let (image, _) = sample_image();
    let mut other = image.clone();
    if let ckpt_common::image::Record::Fd(fd) = &mut other.records[13] {
        fd.cloexec = !fd.cloexec;
    }
    let (mut bytes, donor) = (image.encode(), other.encode());
    let (f, d) = (frames(&bytes)[13].clone(), frames(&donor)[13].clone());
    bytes.splice(f, donor[d].iter().copied());
    let err = decode_checked(&bytes, 0, "splice").unwrap_err().to_string();
    assert!(err.contains("chain checksum mismatch"), "{err}");
}
