//! Builds the entry program of job containers (`entry/entry.c`) as a static executable, which
//! `src/entry.rs` embeds: it must run in any image, whatever C library the image has, if any.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "entry/entry.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let binary = out.join("wafer-entry");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&binary)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{compiler}`: {e}"));
    assert!(
        status.success(),
        "`{compiler} -static` failed for {source}: a C compiler and a static C library (Debian's \
         gcc and libc6-dev) are needed"
    );
}
