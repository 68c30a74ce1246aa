// Hands @napi-rs/cli the type definitions of the binding (typedefs.jsonl), which it turns into the
// generated index.d.ts; napi-derive would emit these from #[napi] attributes.
fn main() {
    println!("cargo:rerun-if-changed=typedefs.jsonl");
    println!("cargo:rerun-if-env-changed=NAPI_TYPE_DEF_TMP_FOLDER");
    if let Ok(dir) = std::env::var("NAPI_TYPE_DEF_TMP_FOLDER") {
        let name = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "infertel-nvml".into());
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::copy("typedefs.jsonl", std::path::Path::new(&dir).join(name));
        }
    }
}
