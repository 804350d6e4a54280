//! DNS messages from a guest (or an upstream) through the shared DNS code:
//! the relay's question parsing and ID rewriting, error responses, and the
//! bridge networks' local zone. Every response produced must itself parse.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use slipway_dns::{Answer, LocalZone};

fuzz_target!(|data: &[u8]| {
    let question = slipway_dns::parse_question(data);
    if let Ok(q) = &question {
        assert!(q.end <= data.len());
        assert!(q.name.as_wire().len() <= 255);
        let _ = q.name.to_string();
    }
    let mut copy = data.to_vec();
    if slipway_dns::set_query_id(&mut copy, 0x1234) {
        assert_eq!(slipway_dns::query_id(&copy), Some(0x1234));
    }
    if let Some(resp) = slipway_dns::error_response(data, slipway_dns::RCODE_SERVFAIL) {
        assert!(slipway_dns::Header::parse(&resp).is_ok_and(|h| h.is_response()));
        if question.is_ok() {
            assert!(
                slipway_dns::parse_question(&resp).is_ok(),
                "question not echoed"
            );
        }
    }
    let mut zone = LocalZone::new(Some("example.test")).expect("zone");
    zone.add_host(Ipv4Addr::new(192, 168, 122, 10).into(), "vm1")
        .expect("host");
    match zone.answer(data) {
        Answer::Local(resp) | Answer::Refuse(resp) => {
            assert!(slipway_dns::Header::parse(&resp).is_ok_and(|h| h.is_response()));
        }
        Answer::Forward | Answer::Ignore => {}
    }
});
