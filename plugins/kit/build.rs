//! Gives `plugin!` the absolute path of the WIT contract (`../../wit` from this crate, the
//! repository's `wit/`): wit-bindgen's `generate!` takes a path literal and resolves a
//! relative one against the crate that invokes it, which for a plugin is the author's crate,
//! anywhere on disk. The path is written into a macro, `__generate!`, that `lib.rs` includes.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest.join("../../wit");
    let wit = wit.canonicalize().unwrap_or_else(|e| {
        panic!(
            "switchyard-plugin-kit: the WIT contract is missing at {} ({e}); the kit must stay in \
             the Switchyard repository's plugins/kit (depend on it by path or git)",
            wit.display()
        )
    });
    println!("cargo::rerun-if-changed={}", wit.display());
    println!("cargo::rerun-if-changed=build.rs");
    let wit = wit.to_str().expect("the WIT path is UTF-8");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("generate.rs");
    let source = format!(
        r#"/// `wit_bindgen::generate!` for `$world` of Switchyard's WIT, with the kit's wit-bindgen.
#[doc(hidden)]
#[macro_export]
macro_rules! __generate {{
    ($world:literal) => {{
        $crate::__private::wit_bindgen::generate!({{
            world: $world,
            path: {wit:?},
            runtime_path: "::switchyard_plugin_kit::__private::wit_bindgen::rt",
        }});
    }};
}}
"#
    );
    std::fs::write(&out, source).expect("writing generate.rs");
}
