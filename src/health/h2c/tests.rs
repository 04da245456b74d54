use super::*;

fn headers(flags: u8, block: &[u8]) -> Vec<u8> {
    http2::frame(http2::HEADERS, flags, STREAM, block)
}

const DONE: u8 = http2::END_HEADERS | http2::END_STREAM;

#[test]
fn the_request_is_preface_settings_and_one_header_block_of_literals() {
    let fields = [
        ("User-Agent".to_string(), "t".to_string()),
        ("Connection".to_string(), "close".to_string()),
        ("X-Key".to_string(), "k".to_string()),
    ];
    let bytes = request("a.test:8080", "/x", &fields);
    let rest = bytes.strip_prefix(http2::PREFACE).expect("preface");
    let (settings, payload) = http2::complete(rest).expect("settings");
    assert_eq!(
        (settings.kind, payload),
        (http2::SETTINGS, &[0, 2, 0, 0, 0, 0][..])
    );
    let (head, block) = http2::complete(&rest[http2::HEAD_LEN + 6..]).expect("headers");
    assert_eq!(
        (head.kind, head.flags, head.stream),
        (http2::HEADERS, DONE, 1)
    );
    let mut want = vec![0x02, 3];
    want.extend(b"GET");
    want.extend([0x06, 4]);
    want.extend(b"http");
    want.extend([0x04, 2]);
    want.extend(b"/x");
    want.extend([0x01, 11]);
    want.extend(b"a.test:8080");
    want.extend([0x00, 10]);
    want.extend(b"user-agent");
    want.extend([1, b't', 0x00, 5]);
    want.extend(b"x-key");
    want.extend([1, b'k']);
    assert_eq!(block, want.as_slice(), "connection is not sent in HTTP/2");
}

#[test]
fn a_header_block_over_one_frame_goes_on_in_continuation_frames() {
    let long = [("x-long".to_string(), "v".repeat(20_000))];
    let bytes = request("a.test", "/", &long);
    let rest = &bytes[http2::PREFACE.len() + http2::HEAD_LEN + 6..];
    let (first, payload) = http2::complete(rest).expect("headers");
    assert_eq!(
        (first.kind, first.flags),
        (http2::HEADERS, http2::END_STREAM)
    );
    let (second, _) = http2::complete(&rest[http2::HEAD_LEN + payload.len()..]).expect("more");
    assert_eq!(
        (second.kind, second.flags),
        (http2::CONTINUATION, http2::END_HEADERS)
    );
}

#[test]
fn integers_over_their_prefix_round_trip() {
    for value in [0, 14, 15, 16, 127, 128, 1337, 20_000, 1 << 27] {
        let mut out = Vec::new();
        integer(&mut out, 4, 0, value);
        assert_eq!(read_integer(&out, 4), Ok((value, out.len())), "{value}");
    }
    // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
    assert_eq!(read_integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)));
    assert!(read_integer(&[0x1f, 0x9a], 5).is_err());
    assert!(read_integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 5).is_err());
    assert!(read_integer(&[], 5).is_err());
}

#[test]
fn statuses_as_nginx_and_the_rfc_write_them() {
    // Indexed: the static table's seven statuses.
    assert_eq!(status_of(&[0x88, 0x5f, 0x00]), Ok(200));
    assert_eq!(status_of(&[0x8d]), Ok(404));
    assert_eq!(status_of(&[0x8e]), Ok(500));
    // nginx's other statuses: incremental indexing, name index 8, a raw value.
    assert_eq!(status_of(b"\x48\x03502"), Ok(502));
    // Without indexing and never indexed, name index 8 or any other :status entry.
    assert_eq!(status_of(b"\x08\x03504"), Ok(504));
    assert_eq!(status_of(b"\x1d\x03302"), Ok(302));
    // RFC 7541 C.6.1 and C.6.2: Huffman-coded 302 and 307.
    assert_eq!(status_of(&[0x48, 0x82, 0x64, 0x02]), Ok(302));
    assert_eq!(status_of(&[0x48, 0x83, 0x64, 0x0e, 0xff]), Ok(307));
    // A new name, raw and Huffman-coded (":status" is 1011100 01000 01001 00011 01001 101101
    // 01000, padded with ones).
    let mut named = vec![0x40, 7];
    named.extend(b":status");
    named.extend(b"\x03201");
    assert_eq!(status_of(&named), Ok(201));
    let huffman_name = [
        0x40, 0x85, 0xb8, 0x84, 0x8d, 0x36, 0xa3, 0x03, b'2', b'0', b'2',
    ];
    assert_eq!(status_of(&huffman_name), Ok(202));
    // A dynamic table size update first.
    assert_eq!(status_of(&[0x20, 0x88]), Ok(200));
    assert_eq!(status_of(&[0x3f, 0xe1, 0x1f, 0x8c]), Ok(400));
}

#[test]
fn header_blocks_that_hold_no_status_are_errors_that_say_so() {
    let err = |b: &[u8]| status_of(b).expect_err("an error");
    assert!(err(&[]).contains("no :status"));
    assert!(err(&[0x80]).contains("index 0"));
    assert!(err(&[0x82]).contains("static table entry 2"));
    assert!(err(&[0xbe]).contains("dynamic table"));
    assert!(err(b"\x40\x04date").contains("\"date\""));
    assert!(err(b"\x48\x05").contains("longer than its block"));
    assert!(err(b"\x48\x0220").contains("three-digit"));
    assert!(err(b"\x48\x03abc").contains("three-digit"));
    assert!(err(b"\x41\x03a.b").contains("table entry 1"));
    // A Huffman code no status holds ('c', 00100), and padding of zeros.
    assert!(err(&[0x48, 0x81, 0x27]).contains("Huffman"));
    assert!(err(&[0x48, 0x81, 0x00]).contains("padding"));
}

#[test]
fn the_answer_is_read_through_settings_and_frames_split_anywhere() {
    let mut server = http2::settings(&[(3, 128)]);
    server.extend(http2::frame(http2::WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]));
    server.extend(headers(http2::END_HEADERS, &[0x88]));
    server.extend(http2::frame(http2::DATA, http2::END_STREAM, STREAM, b"ok"));
    let whole = {
        let mut s = Session::default();
        let replies = s.feed(&server).expect("feed");
        let (ack, _) = http2::complete(&replies).expect("an ack");
        assert_eq!((ack.kind, ack.flags), (http2::SETTINGS, http2::ACK));
        assert!(replies.len() > http2::HEAD_LEN, "the body is credited back");
        s.outcome()
    };
    assert_eq!(whole, Some(End::Status(200)));
    let mut s = Session::default();
    for byte in &server {
        assert_eq!(s.outcome(), None);
        s.feed(std::slice::from_ref(byte)).expect("feed");
    }
    assert_eq!(s.outcome(), Some(End::Status(200)));
}

#[test]
fn padding_priority_continuation_and_an_informational_status() {
    let mut s = Session::default();
    let mut padded = vec![2];
    padded.extend([0, 0, 0, 0, 16]);
    padded.extend(b"\x48\x03");
    padded.extend([0, 0]);
    let flags = http2::PADDED | http2::PRIORITY;
    let mut server = headers(http2::END_HEADERS, &[0x08, 0x03, b'1', b'0', b'3']);
    server.extend(headers(flags, &padded));
    server.extend(http2::frame(
        http2::CONTINUATION,
        http2::END_HEADERS,
        STREAM,
        b"502",
    ));
    server.extend(http2::frame(http2::DATA, http2::END_STREAM, STREAM, b""));
    s.feed(&server).expect("feed");
    assert_eq!(s.outcome(), Some(End::Status(502)));
}

#[test]
fn a_reset_a_goaway_or_a_close_before_the_answer_is_no_answer() {
    let mut s = Session::default();
    s.feed(&http2::frame(http2::RST_STREAM, 0, STREAM, &[0, 0, 0, 2]))
        .expect("feed");
    assert_eq!(
        s.outcome(),
        Some(End::NoAnswer(
            "the stream was reset (INTERNAL_ERROR) without an answer".into()
        ))
    );
    let mut s = Session::default();
    s.feed(&http2::frame(
        http2::GOAWAY,
        0,
        0,
        &[0, 0, 0, 0, 0, 0, 0, 11],
    ))
    .expect("feed");
    assert!(matches!(s.outcome(), Some(End::NoAnswer(w)) if w.contains("ENHANCE_YOUR_CALM")));
    // A GOAWAY that lets stream 1 finish is a server shutting down gracefully.
    let mut s = Session::default();
    s.feed(&http2::frame(
        http2::GOAWAY,
        0,
        0,
        &[0, 0, 0, 1, 0, 0, 0, 0],
    ))
    .expect("feed");
    assert_eq!(s.outcome(), None);
    s.feed(&headers(DONE, &[0x8d])).expect("feed");
    assert_eq!(s.outcome(), Some(End::Status(404)));
    let s = Session::default();
    assert_eq!(
        s.closed(),
        End::NoAnswer("the connection closed without an answer".into())
    );
}

#[test]
fn frames_that_break_the_protocol_are_errors_not_panics() {
    let big = [0x01, 0x00, 0x00, http2::DATA, 0, 0, 0, 0, 1];
    assert!(Session::default()
        .feed(&big)
        .expect_err("too big")
        .contains("65536-byte"));
    let interrupted = [headers(0, &[0x88]), http2::settings(&[])].concat();
    assert!(Session::default().feed(&interrupted).is_err());
    let stray = http2::frame(http2::CONTINUATION, http2::END_HEADERS, STREAM, &[0x88]);
    assert!(Session::default().feed(&stray).is_err());
    let short_pad = headers(http2::END_HEADERS | http2::PADDED, &[9, 0x88]);
    assert!(Session::default().feed(&short_pad).is_err());
    let bad_settings = http2::frame(http2::SETTINGS, 0, 0, &[0, 1, 0]);
    assert!(Session::default().feed(&bad_settings).is_err());
    let no_status = headers(DONE, &[0x82]);
    assert!(Session::default().feed(&no_status).is_err());
    let short_goaway = http2::frame(http2::GOAWAY, 0, 0, &[0, 0]);
    assert!(Session::default().feed(&short_goaway).is_err());
}

#[test]
fn an_http1_answer_to_the_preface_is_said_as_such() {
    let why = Session::default()
        .feed(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n")
        .expect_err("no HTTP/2");
    assert!(
        why.starts_with("an HTTP/1.x answer (HTTP/1.1 400 Bad Request), not HTTP/2"),
        "{why}"
    );
}
