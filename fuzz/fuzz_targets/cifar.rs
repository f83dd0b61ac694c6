//! CIFAR-10 and CIFAR-100 binary files: fixed-size records with label bytes in range.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = clado::data::bytes::cifar_records("cifar10", "data_batch_1.bin", data);
    let _ = clado::data::bytes::cifar_records("cifar100", "train.bin", data);
});
