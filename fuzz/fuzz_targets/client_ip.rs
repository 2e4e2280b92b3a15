//! `http::client_ip` with arbitrary `X-Forwarded-For` headers, and the `Cidr` ranges it trusts.
//!
//! Input lines: the peer address; trusted ranges, comma-separated (each through
//! `Cidr::from_str`, unparsable ones dropped); then one `X-Forwarded-For` value per line (any
//! bytes a header value may hold). Checked:
//! - a range contains its own address (`::ffff:a.b.c.d/n` ones too), and `contains` agrees
//!   with a mask computed here;
//! - an untrusted peer is the answer whatever the headers say;
//! - from a trusted peer: the peer when a value is not visible ASCII or an item is not an
//!   address; otherwise the rightmost untrusted address of the chain, else its first, else
//!   the peer;
//! - a client cannot change the answer by prepending addresses once the chain has an
//!   untrusted one (the spoofing the function exists to prevent).
#![no_main]

use std::net::IpAddr;

use hallpass::config::Cidr;
use hallpass::http::client_ip;
use hyper::header::HeaderValue;
use hyper::HeaderMap;
use libfuzzer_sys::fuzz_target;

/// Whether `ip` is in `net/prefix`, IPv4-mapped IPv6 addresses counting as IPv4.
fn in_range(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (n, a, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let drop = bits - u32::from(prefix);
    drop >= bits || (n >> drop) == (a >> drop)
}

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let (Some(peer), Some(ranges)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(peer) = String::from_utf8_lossy(peer).trim().parse::<IpAddr>() else {
        return;
    };
    let mut trusted = Vec::new();
    let mut nets = Vec::new();
    for text in String::from_utf8_lossy(ranges).split(',') {
        let Ok(cidr) = text.parse::<Cidr>() else {
            continue;
        };
        let (addr, prefix) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
        let mut net: IpAddr = addr.parse().expect("Cidr accepted an unparsable address");
        let max = if net.is_ipv4() { 32 } else { 128 };
        let mut prefix: u8 = if prefix.is_empty() {
            max
        } else {
            prefix.parse().unwrap()
        };
        assert!(prefix <= max);
        assert!(
            cidr.contains(net),
            "{text:?} does not contain its own address"
        );
        // A range inside ::ffff:0:0/96 is an IPv4 range (candidates are compared as IPv4).
        if let IpAddr::V6(v6) = net {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                (net, prefix) = (IpAddr::V4(v4), prefix - 96);
            }
        }
        for ip in [peer, net] {
            assert_eq!(
                cidr.contains(ip),
                in_range(net, prefix, ip),
                "{text:?} {ip}"
            );
        }
        trusted.push(cidr);
        nets.push((net, prefix));
    }
    let values: Vec<&[u8]> = lines
        .filter(|v| HeaderValue::from_bytes(v).is_ok())
        .collect();
    let is_trusted = |ip: IpAddr| nets.iter().any(|&(n, p)| in_range(n, p, ip));

    let got = client_ip(peer, &headers(&values), &trusted);
    if !is_trusted(peer) {
        assert_eq!(got, peer, "believed headers from an untrusted peer");
        return;
    }

    // The chain, or None when any value or item is malformed.
    let chain: Option<Vec<IpAddr>> = values
        .iter()
        .map(|v| {
            let v = std::str::from_utf8(v)
                .ok()
                .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))?;
            v.split(',')
                .map(|i| i.trim().parse::<IpAddr>().ok())
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<Vec<_>>>>()
        .map(|c| c.concat());
    let Some(chain) = chain else {
        assert_eq!(got, peer, "a malformed header was not ignored");
        return;
    };
    let untrusted = chain.iter().rev().find(|ip| !is_trusted(**ip));
    assert_eq!(got, *untrusted.or(chain.first()).unwrap_or(&peer));

    if untrusted.is_some() {
        for forged in [&b"203.0.113.7"[..], b"10.0.0.1, ::1", b"::ffff:192.0.2.1"] {
            let mut spoofed = vec![forged];
            spoofed.extend_from_slice(&values);
            assert_eq!(
                client_ip(peer, &headers(&spoofed), &trusted),
                got,
                "spoofed"
            );
        }
    }
});
