//! The cost of hallpass's access tokens: signing one (every device-code exchange and every
//! refresh rotation signs a new JWT, W4 in benches/load.rs) and verifying one (every
//! introspection of an access token, W6), with each algorithm hallpass offers.
//!
//! ```sh
//! cargo bench --bench sign                 # defaults: 20,000 tokens per figure
//! cargo bench --bench sign -- --tokens 50000
//! ```
//!
//! It times the server's own code (`oauth::jwt::SigningKey::sign`, `oauth::jwt::verify`) on one
//! thread, claims shaped like a refresh grant's. These are floors for the load benchmark: a
//! workload that signs once per request can reach at most `cores / (sign µs)` requests per
//! second on signing alone, before any HTTP or database work.

use std::time::Instant;

use hallpass::oauth::jwt::{self, AccessClaims, Algorithm, PublicKey, SigningKey};

fn main() {
    let mut tokens = 20_000u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tokens" => {
                tokens = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--tokens takes a positive number");
            }
            // `cargo bench` passes --bench to every harness-less bench.
            "--bench" => {}
            other => panic!("unknown argument {other:?} (only --tokens N)"),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("hallpass signing benchmark: {tokens} tokens per figure, one thread, {cores} cores");
    for algorithm in [Algorithm::EdDSA, Algorithm::ES256] {
        let (key, _) = SigningKey::generate(algorithm);
        let public = [PublicKey {
            kid: key.kid.clone(),
            algorithm,
            public: key.public_key(),
        }];
        let claims = AccessClaims {
            iss: "http://127.0.0.1:8080".into(),
            sub: uuid::Uuid::now_v7().to_string(),
            aud: None,
            client_id: uuid::Uuid::now_v7().to_string(),
            scope: "read write".into(),
            iat: 1_764_000_000,
            exp: 1_764_000_900,
            jti: uuid::Uuid::new_v4().to_string(),
            device_id: Some(uuid::Uuid::now_v7().to_string()),
        };
        // Warm up, and keep one token to verify.
        let token = key.sign(&claims);
        for _ in 0..tokens / 10 {
            std::hint::black_box(key.sign(&claims));
        }
        let started = Instant::now();
        for _ in 0..tokens {
            std::hint::black_box(key.sign(std::hint::black_box(&claims)));
        }
        let sign = started.elapsed().as_secs_f64() * 1e6 / f64::from(tokens);
        let started = Instant::now();
        for _ in 0..tokens {
            let verified = jwt::verify(std::hint::black_box(&token), &public);
            assert!(verified.is_some(), "a token we just signed must verify");
        }
        let verify = started.elapsed().as_secs_f64() * 1e6 / f64::from(tokens);
        println!(
            "{:<6} sign {sign:6.1} µs/token ({:>6.0} tokens/s per core)   verify {verify:6.1} \
             µs/token ({:>6.0} per core)   token {} bytes",
            algorithm.as_str(),
            1e6 / sign,
            1e6 / verify,
            token.len(),
        );
    }
}
