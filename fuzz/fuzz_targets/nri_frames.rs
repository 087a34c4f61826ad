//! NRI's framing, as the runtime's end of the socket sends it: the
//! multiplexer's frames (`conn`, length, payload) and, on each logical
//! connection, ttrpc messages (10-byte header, payload). Framing must not
//! depend on how the socket cut the stream, and must give back exactly the
//! bytes that were framed.
//!
//! Input: one byte (how to cut the stream into reads), then the stream.
//! Only `mux` and the ttrpc frame decoder are used, so this target does not
//! change when the protobuf messages do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_tpm_hook::frontend::nri::mux::{self, Demux, Frame};
use oci_tpm_hook::frontend::nri::ttrpc::{Decoder, Message};

/// Every frame in `stream` fed in pieces of `piece` bytes, and the error
/// that stopped the demultiplexer, if any.
fn demux(stream: &[u8], piece: usize) -> (Vec<Frame>, bool) {
    let mut d = Demux::new();
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// The ttrpc messages of one logical connection, fed frame by frame.
fn messages<'a>(payloads: impl Iterator<Item = &'a [u8]>) -> (Vec<Message>, usize, bool) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in payloads {
        d.push(p);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, d.pending(), true),
            }
        }
    }
    (out, d.pending(), false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut).max(1);
    let (whole, whole_err) = demux(stream, stream.len().max(1));
    let (pieces, pieces_err) = demux(stream, piece);
    assert_eq!(whole, pieces, "frames depend on how the stream was cut");
    assert_eq!(whole_err, pieces_err);

    // Framing gives back the bytes: re-encoding the frames rebuilds the
    // stream's prefix they came from.
    let mut rebuilt = Vec::new();
    for f in &whole {
        rebuilt.extend_from_slice(&f.conn.to_be_bytes());
        rebuilt.extend_from_slice(&(f.payload.len() as u32).to_be_bytes());
        rebuilt.extend_from_slice(&f.payload);
    }
    assert_eq!(&stream[..rebuilt.len()], &rebuilt[..]);

    for conn in [mux::PLUGIN_CONN, mux::RUNTIME_CONN] {
        let payloads = whole.iter().filter(|f| f.conn == conn);
        let (msgs, pending, _) = messages(payloads.clone().map(|f| f.payload.as_slice()));
        // The same bytes as one piece give the same messages.
        let joined: Vec<u8> = payloads.flat_map(|f| f.payload.iter().copied()).collect();
        let (at_once, _, _) = messages(std::iter::once(joined.as_slice()));
        assert_eq!(msgs, at_once);
        let encoded: Vec<u8> = msgs.iter().flat_map(Message::encode).collect();
        assert_eq!(&joined[..encoded.len()], &encoded[..]);
        assert!(encoded.len() + pending <= joined.len());

        // And what we send survives the peer's demultiplexer.
        let mut wire = Vec::new();
        mux::encode(conn, &joined, &mut wire);
        let (back, err) = demux(&wire, piece);
        assert!(!err);
        assert!(back
            .iter()
            .all(|f| f.conn == conn && f.payload.len() + mux::HEADER_LEN <= mux::MAX_SEND_FRAME));
        let back: Vec<u8> = back.into_iter().flat_map(|f| f.payload).collect();
        assert_eq!(back, joined);
    }
});
