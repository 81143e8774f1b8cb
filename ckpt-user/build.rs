//! Builds the eBPF programs (`ckpt-ebpf`, nightly + bpf-linker) with aya-build; the
//! object is embedded in the library by `tracker.rs`.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ckpt-ebpf");
    // Any rerun-if-changed replaces cargo's default (rebuild on any change in this
    // package): name every input of the eBPF object.
    println!("cargo:rerun-if-changed=../ckpt-common/src");
    println!("cargo:rerun-if-changed=../ckpt-common/Cargo.toml");
    println!("cargo:rerun-if-changed=../ckpt-ebpf/src");
    println!("cargo:rerun-if-changed=../ckpt-ebpf/Cargo.toml");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ckpt-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
