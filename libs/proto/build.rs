//! Compiles every .proto under proto/ with the vendored protoc and writes a descriptor set
//! (with source info) that the gateway and gRPC reflection read at run time.
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut protos = Vec::new();
    collect(&root.join("campaignos"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed={}", root.display());
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    let includes = [root.clone(), protoc_bin_vendored::include_path()?];
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Event payloads name their type in the envelope (`prost::Name::full_name`).
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("campaignos_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
