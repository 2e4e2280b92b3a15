//! A tiny MaxMind DB (format 2.0) writer, enough to build a GeoIP2-City file with one IPv4
//! network for the location tests: no such file may be downloaded at test time.

/// Encodes one value of the MaxMind DB data section.
pub enum V<'a> {
    Str(&'a str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'a str, V<'a>)>),
    Array(Vec<V<'a>>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29, "sizes >= 29 are not needed here");
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        // Extended type: type 0 in the control byte, then type - 7.
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn uint(out: &mut Vec<u8>, kind: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

impl V<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            V::Str(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            V::U16(n) => uint(out, 5, u64::from(*n)),
            V::U32(n) => uint(out, 6, u64::from(*n)),
            V::U64(n) => uint(out, 9, *n),
            V::Map(entries) => {
                control(out, 7, entries.len());
                for (k, v) in entries {
                    V::Str(k).encode(out);
                    v.encode(out);
                }
            }
            V::Array(items) => {
                control(out, 11, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// An IPv4 database in which `network/prefix` maps to `record` and nothing else has data.
pub fn ipv4_database(network: [u8; 4], prefix: usize, record: &V<'_>) -> Vec<u8> {
    let node_count = prefix as u32;
    let bits = u32::from_be_bytes(network);
    let empty = node_count; // a record equal to node_count means "no data"
    let data_pointer = node_count + 16; // offset 0 in the data section
    let mut out = Vec::new();
    for i in 0..prefix {
        let bit = (bits >> (31 - i)) & 1;
        let next = if i + 1 == prefix {
            data_pointer
        } else {
            i as u32 + 1
        };
        let (left, right) = if bit == 0 {
            (next, empty)
        } else {
            (empty, next)
        };
        out.extend_from_slice(&left.to_be_bytes()[1..]);
        out.extend_from_slice(&right.to_be_bytes()[1..]);
    }
    out.extend_from_slice(&[0u8; 16]);
    record.encode(&mut out);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    V::Map(vec![
        ("binary_format_major_version", V::U16(2)),
        ("binary_format_minor_version", V::U16(0)),
        ("build_epoch", V::U64(1_790_000_000)),
        ("database_type", V::Str("GeoIP2-City")),
        ("description", V::Map(vec![("en", V::Str("hallpass test"))])),
        ("ip_version", V::U16(4)),
        ("languages", V::Array(vec![V::Str("en")])),
        ("node_count", V::U32(node_count)),
        ("record_size", V::U16(24)),
    ])
    .encode(&mut out);
    out
}
