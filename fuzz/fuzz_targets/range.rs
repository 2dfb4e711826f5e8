#![no_main]

use libfuzzer_sys::fuzz_target;

// The first eight bytes are the answer's length, the rest the header.
fuzz_target!(|data: &[u8]| {
    let Some((len, header)) = data.split_first_chunk::<8>() else { return };
    if let Ok(header) = std::str::from_utf8(header) {
        kaifang::fuzzing::range(header, u64::from_le_bytes(*len) % (1 << 40));
    }
});
