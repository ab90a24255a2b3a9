//! The property the wire fuzzers check, shared by the libFuzzer target (`fuzz_targets/wire_decode.rs`,
//! run by `cargo fuzz`) and the stable-toolchain fuzzer in `tests/soak.rs` (`fuzz_wire_decode_stable`).
//!
//! Input layout: byte 0 picks the mode, the rest is split into frames on [`SEP`].
//! - mode % 3 == 0: no key (signing disabled), frames decoded as they are;
//! - mode % 3 == 1: a fixed key, frames as they are (exercises the signature check);
//! - mode % 3 == 2: a fixed key, and the frame after the first delimiter is replaced by the correct
//!   signature of the four frames after it, so the JSON checks behind the HMAC are reached too.
//!
//! `decode` must never panic. When it accepts a message, encoding that message and decoding it again
//! must succeed and give the same frames (encode is deterministic: no new ids, a keyed signature).
#![allow(dead_code)]

use llmspell::wire::{self, Signer};

pub const SEP: &[u8] = b"\x00|\x00";
pub const KEY: &str = "5ecret-key-for-fuzzing";

pub fn split_frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + SEP.len() <= data.len() {
        if &data[i..i + SEP.len()] == SEP {
            frames.push(data[start..i].to_vec());
            i += SEP.len();
            start = i;
        } else {
            i += 1;
        }
    }
    frames.push(data[start..].to_vec());
    frames
}

pub fn join_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.join(SEP)
}

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut frames = split_frames(rest);
    let signer = match mode % 3 {
        0 => Signer::new(""),
        _ => Signer::new(KEY),
    };
    if mode % 3 == 2 {
        if let Some(d) = frames.iter().position(|f| f == wire::DELIMITER) {
            if frames.len() >= d + 6 {
                let sig = signer.sign(&[&frames[d + 2], &frames[d + 3], &frames[d + 4], &frames[d + 5]]);
                frames[d + 1] = sig.into_bytes();
            }
        }
    }
    let Ok(msg) = wire::decode(frames, &signer) else { return };
    // Accessors must not panic either.
    let _ = (msg.msg_type(), msg.msg_id(), msg.parent_msg_id());
    let once = wire::encode(&msg, &signer);
    let again = wire::decode(once.clone(), &signer).expect("a message we encoded decodes");
    let twice = wire::encode(&again, &signer);
    assert_eq!(once, twice, "encode(decode(encode(m))) differs from encode(m)");
}
