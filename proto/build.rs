//! Generates the CRI bindings from `cri/v1/api.proto` (protoc, from Debian's protobuf-compiler, is
//! installed by hack/install-deps.sh) and keeps the compiled descriptor set beside them, for the
//! wire-compatibility test and for clients that want reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=cri/v1/api.proto");
    // berthd keeps pod and container configs on disk as JSON: every message reads a record written
    // before a field existed (`serde(default)`), as an upgrade from an older berth must.
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .file_descriptor_set_path(out.join("cri_v1.bin"))
        .compile_protos(&["cri/v1/api.proto"], &["cri"])?;
    Ok(())
}
