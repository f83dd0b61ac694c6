//! PyTorch `.pth` checkpoints (a zip archive holding a pickle): the pickle reader takes a
//! path, so each input is written to a file of this process first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn scratch() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir()
            .join(format!("clado-fuzz-{}.pth", std::process::id()))
            .to_string_lossy()
            .into_owned()
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).expect("write the scratch file");
    let _ = clado::checkpoint::load(scratch());
});
