//! With the `onnx` feature: the ONNX protobuf types, generated from the vendored
//! `proto/onnx.proto` (ONNX 1.23's, Apache-2.0) by prost-build, the schema compiled by protox
//! (pure Rust, so no `protoc` is needed).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "onnx")]
    {
        let proto = "proto/onnx.proto";
        println!("cargo:rerun-if-changed={proto}");
        let descriptors = protox::compile([proto], ["proto"]).expect("protox: compiling proto/onnx.proto");
        prost_build::Config::new()
            .compile_fds(descriptors)
            .expect("prost-build: generating the ONNX types");
    }
}
