//! Builds the eBPF programs (`ckpt-ebpf`, nightly + bpf-linker) with aya-build; the
//! object is embedded in the library by `tracker.rs`.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ckpt-ebpf");
    println!("cargo:rerun-if-changed=../ckpt-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ckpt-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
