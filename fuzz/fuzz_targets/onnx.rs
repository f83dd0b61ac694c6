//! ONNX models: any bytes give a checked graph or an input error, never a panic or an
//! allocation beyond the declared-size limits (external data references are refused: the
//! bytes come without a folder).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = clado::graph::Graph::from_onnx_bytes(data, "m.onnx") {
        let _ = (g.layers().len(), g.input_shape(), g.last_uses());
    }
});
