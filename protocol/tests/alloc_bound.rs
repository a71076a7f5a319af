//! "Never allocates beyond the limits": what each decoder allocates, measured by a counting
//! global allocator (hence a test binary of its own).
//!
//! A peer controls every length and count the decoders read. These tests check that a
//! declared size is refused, or checked against the bytes actually present, before anything
//! is allocated for it: a message declaring a gibibyte costs at most twice its real size plus
//! a small constant, and hostile input in general costs memory in proportion to its size.
//! Only allocations made by the test's own thread while it decodes are counted (the test
//! harness runs tests on several threads at once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use switchyard_protocol::backend;
use switchyard_protocol::frame::{frames, peek_header, split_frame, HEADER_LEN};
use switchyard_protocol::frontend::{decode_sasl_initial_response, decode_startup, FrontendMessage};
use switchyard_protocol::{Frame, ProtocolError, DEFAULT_MAX_MESSAGE_LEN};

#[path = "support/hostile.rs"]
mod hostile;
#[path = "support/inputs.rs"]
mod inputs;
#[path = "support/messages.rs"]
#[allow(dead_code)] // codec.rs uses the rest
mod messages;
#[path = "support/runner.rs"]
mod runner;

/// Counts what the current thread allocates while [`measure`] runs.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn allocated(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let live = LIVE.get() + size as isize;
            LIVE.set(live);
            PEAK.set(PEAK.get().max(live));
            LARGEST.set(LARGEST.get().max(size));
        }
    });
}

fn freed(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LIVE.set(LIVE.get() - size as isize);
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        freed(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block before the old one goes, as a moving realloc holds both.
        allocated(new_size);
        freed(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Memory used by one call.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Most bytes live at once (what the call keeps, its result included).
    peak: usize,
    /// The largest single allocation.
    largest: usize,
}

/// Runs `f`, counting what this thread allocates until it returns (its result included).
fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    LIVE.set(0);
    PEAK.set(0);
    LARGEST.set(0);
    TRACKING.set(true);
    let r = f();
    TRACKING.set(false);
    let usage = Usage {
        peak: PEAK.get().max(0) as usize,
        largest: LARGEST.get(),
    };
    (r, usage)
}

const GIB: i32 = 1 << 30;

/// What a message declaring a gibibyte may cost: twice its real size plus a small constant.
fn gib_bound(input: usize) -> usize {
    2 * input + 256
}

fn assert_within(what: &str, input: usize, usage: Usage, bound: usize) {
    println!(
        "alloc: {what}: {input} bytes in, peak {} bytes, largest block {} bytes (bound {bound})",
        usage.peak, usage.largest
    );
    assert!(
        usage.peak <= bound,
        "{what}: {usage:?} over {bound} bytes for {input} bytes of input"
    );
}

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut raw = BytesMut::new();
    raw.put_u8(tag);
    raw.put_i32(body.len() as i32 + 4);
    raw.put_slice(body);
    Frame::new(raw.freeze()).unwrap()
}

/// Each place a peer declares a size, declaring 1 GiB (or the largest count the field can
/// hold) in a message a few bytes long: refused before anything is allocated for it. A
/// decoder that reserved what it was told (as the host's DataRow parser did, 786 KB for
/// 32767 columns declared in a 2-byte body) fails here.
#[test]
fn declared_gigabytes_are_refused_before_allocating() {
    // A tagged message's length field, under the default limit and under none at all.
    let mut header = vec![b'Q'];
    header.extend(GIB.to_be_bytes());
    for max in [DEFAULT_MAX_MESSAGE_LEN, usize::MAX] {
        let mut buf = BytesMut::from(&header[..]);
        let (r, usage) = measure(|| {
            let peeked = peek_header(&buf, max);
            let split = split_frame(&mut buf, max);
            let iterated = frames(&header, max).count();
            (peeked, split, iterated)
        });
        if max == usize::MAX {
            assert!(matches!(r, (Ok(Some(_)), Ok(None), 0)), "{r:?}");
        } else {
            assert!(matches!(r.1, Err(ProtocolError::TooLarge { .. })), "{r:?}");
        }
        assert_within("frame header declaring 1 GiB", header.len(), usage, 0);
    }

    // A startup packet's length.
    let mut startup = BytesMut::new();
    startup.put_i32(GIB);
    startup.put_u32(switchyard_protocol::PROTOCOL_VERSION_3_0);
    let n = startup.len();
    let (r, usage) = measure(|| decode_startup(&mut startup));
    assert!(matches!(r, Err(ProtocolError::TooLarge { .. })), "{r:?}");
    assert_within("startup packet declaring 1 GiB", n, usage, 0);

    // Lengths and counts inside client message bodies.
    let mut bind_value = b"p\0s\0\0\0\0\x01".to_vec();
    bind_value.extend(GIB.to_be_bytes());
    bind_value.extend(b"abc\0\0");
    let mut sasl = b"SCRAM-SHA-256\0".to_vec();
    sasl.extend(GIB.to_be_bytes());
    sasl.extend(b"n,,n=,r=x");
    let client: [(&str, u8, Vec<u8>); 4] = [
        ("Bind parameter declaring 1 GiB", b'B', bind_value),
        (
            "Bind declaring 65535 formats and parameters",
            b'B',
            b"p\0s\0\xff\xff\0\0\xff\xff".to_vec(),
        ),
        (
            "Parse declaring 65535 parameter types",
            b'P',
            b"s\0q\0\xff\xff\0\0\0\x17".to_vec(),
        ),
        ("SASLInitialResponse declaring 1 GiB", b'p', sasl),
    ];
    for (what, tag, body) in client {
        let f = frame(tag, &body);
        let (r, usage) = measure(|| {
            let m = FrontendMessage::decode(&f);
            let sasl = decode_sasl_initial_response(&body);
            (m.map(drop), sasl.map(drop))
        });
        assert!(r.0.is_err() || r.1.is_err(), "{what}: {r:?}");
        assert_within(what, f.len(), usage, gib_bound(f.len()));
    }

    // Lengths and counts inside server message bodies.
    let mut value = vec![0, 1];
    value.extend(GIB.to_be_bytes());
    value.extend(b"abc");
    let mut negotiate = vec![0, 0, 0, 0];
    negotiate.extend(GIB.to_be_bytes());
    negotiate.extend(b"_pq_.x\0");
    /// Whether a decoder refuses a body.
    type Refuses = fn(&[u8]) -> bool;
    let server: [(&str, Vec<u8>, Refuses); 4] = [
        (
            "DataRow declaring 32767 columns",
            b"\x7f\xff\0\0\0\x01".to_vec(),
            |b| backend::parse_data_row(b).is_err(),
        ),
        ("DataRow value declaring 1 GiB", value, |b| {
            backend::parse_data_row(b).is_err()
        }),
        (
            "NegotiateProtocolVersion declaring 2^30 options",
            negotiate,
            |b| backend::parse_negotiate_protocol_version(b).is_err(),
        ),
        (
            "AuthenticationSASL without its terminator",
            b"\0\0\0\x0aSCRAM-SHA-256\0".to_vec(),
            |b| backend::parse_authentication(b).is_err(),
        ),
    ];
    for (what, body, refused) in server {
        let (r, usage) = measure(|| refused(&body));
        assert!(r, "{what} was accepted");
        assert_within(
            what,
            body.len() + HEADER_LEN,
            usage,
            gib_bound(body.len() + HEADER_LEN),
        );
    }
}

/// Bytes a decoder may allocate per byte of input: 2 for the client message decoders
/// (fields share the frame; a Parse's types or a copied password are at most the body),
/// more for decoders that build a list of small owned values, where per-element overhead
/// dominates (a startup parameter `k\0\0` of 3 bytes is a 48-byte pair in a vector that
/// may have doubled; a SASL mechanism `m\0` a 16-byte `&str`).
const CLIENT_FACTOR: usize = 2;
const STARTUP_FACTOR: usize = 40;
const SERVER_FACTOR: usize = 20;
/// Fixed costs: a few small blocks (a frame's shared-buffer header, an empty vector grown once).
const CONSTANT: usize = 512;

#[test]
fn decoders_allocate_in_proportion_to_their_input() {
    use hostile::hostile;
    use inputs::{client_stream, server_message, startup_packet};
    let input = (
        hostile(client_stream()),
        hostile(startup_packet()),
        hostile(server_message().prop_map(|(_, body)| body)),
    );
    runner::fuzz("allocation bounds", input, |(stream, startup, body)| {
        let mut buf = BytesMut::from(&stream[..]);
        let (_, usage) = measure(|| {
            while let Ok(Some(f)) = split_frame(&mut buf, 1 << 20) {
                let _ = FrontendMessage::decode(&f);
                let _ = decode_sasl_initial_response(f.body());
            }
        });
        prop_assert!(
            usage.peak <= CLIENT_FACTOR * stream.len() + CONSTANT,
            "client stream of {}: {usage:?}",
            stream.len()
        );

        let mut buf = BytesMut::from(&startup[..]);
        let (_, usage) = measure(|| decode_startup(&mut buf));
        prop_assert!(
            usage.peak <= STARTUP_FACTOR * startup.len() + CONSTANT,
            "startup of {}: {usage:?}",
            startup.len()
        );

        let (_, usage) = measure(|| {
            (
                backend::parse_error_fields(&body),
                backend::parse_parameter_status(&body),
                backend::parse_authentication(&body),
                backend::parse_negotiate_protocol_version(&body),
                backend::parse_data_row(&body),
            )
        });
        prop_assert!(
            usage.peak <= SERVER_FACTOR * body.len() + CONSTANT,
            "server body of {}: {usage:?}",
            body.len()
        );
        Ok(())
    });
}

/// The worst case of the startup packet's factor, measured: a packet of the largest size
/// allowed made of the smallest parameters stays within [`STARTUP_FACTOR`].
#[test]
fn the_largest_startup_packet_of_tiny_parameters_stays_within_its_factor() {
    let mut body = switchyard_protocol::PROTOCOL_VERSION_3_0.to_be_bytes().to_vec();
    while body.len() + 4 + 4 < switchyard_protocol::MAX_STARTUP_PACKET_LEN {
        body.extend(b"k\0\0");
    }
    body.push(0);
    let mut packet = BytesMut::new();
    packet.put_i32(body.len() as i32 + 4);
    packet.put_slice(&body);
    let n = packet.len();
    assert!(n <= switchyard_protocol::MAX_STARTUP_PACKET_LEN);
    let (r, usage) = measure(|| decode_startup(&mut packet));
    assert!(r.is_ok(), "{r:?}");
    assert_within(
        "largest startup packet of 1-byte parameters",
        n,
        usage,
        STARTUP_FACTOR * n + CONSTANT,
    );
}
