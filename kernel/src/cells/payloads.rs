//! The payload registry: ring-3 programs built by `cargo xtask build` (from `cell/payloads`)
//! and embedded in the kernel image. xtask builds them first and passes their directory as
//! `XYLEM_PAYLOAD_DIR`; a plain `cargo build` of the kernel stops with a message saying so.

macro_rules! payload {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!(
                    "XYLEM_PAYLOAD_DIR",
                    "build the kernel with `cargo xtask build`: it builds the cell payloads and sets XYLEM_PAYLOAD_DIR"
                ),
                "/",
                $name
            )) as &[u8],
        )
    };
}

static PAYLOADS: &[(&str, &[u8])] = &[
    payload!("hello"),
    payload!("crasher"),
    payload!("spinner"),
    payload!("counter"),
    payload!("http"),
    payload!("echo"),
    payload!("memhog"),
    payload!("sockhog"),
    payload!("nettest"),
];

/// The ELF image of a payload.
pub fn image(name: &str) -> Option<&'static [u8]> {
    PAYLOADS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| *image)
}

/// Every payload name.
pub fn names() -> impl Iterator<Item = &'static str> {
    PAYLOADS.iter().map(|(n, _)| *n)
}
