//! The QR code of the complete verification URI, for devices with a screen.

use crate::*;

#[test]
fn the_qr_code_is_an_svg_for_a_code_and_a_400_for_anything_else() {
    let site = Site::new(&[]);
    // Any well-formed code (it looks nothing up), as a person or device would write it.
    for typed in ["bcdf-ghjk", "BCDFGHJK", " bcdf ghjk "] {
        let r = get(&site, &format!("/device/qr?user_code={}", enc(typed)));
        assert_eq!(r.status, 200, "{typed:?}: {}", r.text);
        assert_eq!(r.header("content-type"), Some("image/svg+xml"));
        assert!(r.text.contains("<svg"), "{}", r.text);
        assert_secure_headers(&r);
        assert!(!r.text.to_ascii_lowercase().contains("<script"));
    }
    // The same image whether or not the code exists.
    let live = site.pending("tv");
    let r = get(&site, &format!("/device/qr?user_code={}", live.user_code));
    assert_eq!(r.status, 200);
    assert!(r.text.contains("<svg"));
    for bad in [
        "/device/qr?user_code=garbage",
        "/device/qr?user_code=%3Cscript%3E",
        "/device/qr?user_code=abcd-efgh",
        "/device/qr?user_code=BCDF-GHJK-L",
        "/device/qr",
    ] {
        let r = get(&site, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_secure_page(&r);
        assert!(!r.text.contains("<svg"));
    }
}
