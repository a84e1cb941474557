//! Embeds keyclaim.wasm: the file named by KEYCLAIM_WASM (set by the repository's Makefile), else
//! module/keyclaim.wasm (the copy a packaged crate carries), else ../../dist/keyclaim.wasm (a
//! checkout after `make wasm`). The module is never committed.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=KEYCLAIM_WASM");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let candidates: Vec<PathBuf> = match std::env::var_os("KEYCLAIM_WASM") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![dir.join("module/keyclaim.wasm"), dir.join("../../dist/keyclaim.wasm")],
    };
    for c in &candidates {
        println!("cargo:rerun-if-changed={}", c.display());
    }
    let Some(src) = candidates.iter().find(|p| p.is_file()) else {
        panic!(
            "keyclaim.wasm not found (looked at {}): run `make wasm` in the keyclaim repository, \
             or set KEYCLAIM_WASM to the module's path",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("keyclaim.wasm");
    std::fs::copy(src, &out).unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
}
