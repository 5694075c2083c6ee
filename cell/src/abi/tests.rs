//! Host tests of the ABI: numbers, errno values, result encoding, layout, and the encoders
//! and decoders of every record that crosses the boundary.

use super::*;
use alloc::format;

#[test]
fn syscall_numbers_round_trip_and_are_dense() {
    for (index, call) in Syscall::ALL.iter().enumerate() {
        assert_eq!(call.number(), index as u64);
        assert_eq!(Syscall::from_number(call.number()), Some(*call));
    }
    assert_eq!(Syscall::from_number(Syscall::ALL.len() as u64), None);
    assert_eq!(Syscall::from_number(u64::MAX), None);
}

#[test]
fn errno_values_match_linux_and_round_trip() {
    assert_eq!(Errno::EFAULT.value(), 14);
    assert_eq!(Errno::ENOSYS.value(), 38);
    assert_eq!(Errno::EINVAL.value(), 22);
    assert_eq!(Errno::EBADF.value(), 9);
    for errno in Errno::ALL {
        assert_eq!(Errno::from_value(errno.value()), Some(errno));
        assert_eq!(decode_result(encode_result(Err(errno))), Err(errno));
    }
    assert_eq!(Errno::from_value(0), None);
}

#[test]
fn result_encoding_separates_values_from_errors() {
    assert_eq!(decode_result(encode_result(Ok(0))), Ok(0));
    assert_eq!(decode_result(encode_result(Ok(4096))), Ok(4096));
    assert_eq!(encode_result(Err(Errno::EFAULT)), (-14i64) as u64);
    // Unknown error values degrade to ENOSYS rather than being taken as successes.
    assert_eq!(decode_result((-4000i64) as u64), Err(Errno::ENOSYS));
    // Below the errno window counts as a (huge) value, as on Linux.
    assert_eq!(decode_result((-4096i64) as u64), Ok((-4096i64) as u64));
}

#[test]
fn user_range_rejects_kernel_overflow_and_top_page() {
    assert_eq!(user_range(USER_CODE_BASE, 16), Ok(()));
    assert_eq!(user_range(0, 0), Ok(()));
    assert_eq!(user_range(USER_MAX_ADDR - 1, 1), Ok(()));
    assert_eq!(user_range(USER_MAX_ADDR - 1, 2), Err(Errno::EFAULT));
    assert_eq!(user_range(USER_MAX_ADDR, 0), Err(Errno::EFAULT));
    assert_eq!(user_range(KERNEL_HALF_START, 1), Err(Errno::EFAULT));
    assert_eq!(user_range(u64::MAX, 2), Err(Errno::EFAULT));
    assert_eq!(user_range(1, u64::MAX), Err(Errno::EFAULT));
}

#[test]
fn args_blob_round_trips() {
    let mut blob = [0u8; MAX_ARGS_BYTES];
    let len = encode_args(["pagefault", "500", ""], &mut blob).unwrap();
    assert_eq!(&blob[..len], b"pagefault\x00500\x00\x00");
    let decoded: [&str; 3] = {
        let mut iter = ArgsIter::new(&blob[..len]);
        [
            iter.next().unwrap(),
            iter.next().unwrap(),
            iter.next().unwrap(),
        ]
    };
    assert_eq!(decoded, ["pagefault", "500", ""]);
    assert_eq!(ArgsIter::new(&blob[..len]).count(), 3);
    assert_eq!(ArgsIter::new(b"").count(), 0);
    assert_eq!(ArgsIter::new(b"tail").next(), Some("tail"));
    let mut invalid = ArgsIter::new(b"\xff\xfe\0ok\0");
    assert_eq!(
        (invalid.next(), invalid.next(), invalid.next()),
        (Some(""), Some("ok"), None)
    );
}

#[test]
fn args_blob_limits_are_enforced() {
    let mut blob = [0u8; MAX_ARGS_BYTES];
    let many = ["a"; MAX_ARGS + 1];
    assert_eq!(encode_args(many, &mut blob), Err(ArgsError::TooMany));
    assert_eq!(encode_args(["a"; MAX_ARGS], &mut blob), Ok(2 * MAX_ARGS));
    let long = core::str::from_utf8(&[b'x'; MAX_ARG_LEN + 1]).unwrap();
    assert_eq!(encode_args([long], &mut blob), Err(ArgsError::TooLong));
    assert_eq!(
        encode_args(["a\0b"], &mut blob),
        Err(ArgsError::ContainsNul)
    );
    let mut small = [0u8; 3];
    assert_eq!(
        encode_args(["abc"], &mut small),
        Err(ArgsError::BlobTooLarge)
    );
}

#[test]
fn new_errno_values_are_linux_ones_and_names_are_unique() {
    let linux = [
        (Errno::EMFILE, 24),
        (Errno::EPIPE, 32),
        (Errno::ENOTSOCK, 88),
        (Errno::EMSGSIZE, 90),
        (Errno::EOPNOTSUPP, 95),
        (Errno::EADDRINUSE, 98),
        (Errno::EADDRNOTAVAIL, 99),
        (Errno::ENETUNREACH, 101),
        (Errno::ECONNRESET, 104),
        (Errno::ENOBUFS, 105),
        (Errno::EISCONN, 106),
        (Errno::ENOTCONN, 107),
        (Errno::ETIMEDOUT, 110),
        (Errno::ECONNREFUSED, 111),
        (Errno::EALREADY, 114),
        (Errno::EINPROGRESS, 115),
    ];
    for (errno, value) in linux {
        assert_eq!(errno.value(), value, "{}", errno.name());
    }
    for (i, a) in Errno::ALL.iter().enumerate() {
        for b in &Errno::ALL[i + 1..] {
            assert_ne!(a.value(), b.value());
            assert_ne!(a.name(), b.name());
        }
    }
}

#[test]
fn syscall_names_are_unique_and_lowercase() {
    for (i, a) in Syscall::ALL.iter().enumerate() {
        assert!(a
            .name()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_'));
        for b in &Syscall::ALL[i + 1..] {
            assert_ne!(a.name(), b.name());
        }
    }
    assert_eq!(Syscall::from_number(nr::POLL), Some(Syscall::Poll));
    assert_eq!(
        Syscall::from_number(nr::SET_OPTION),
        Some(Syscall::SetOption)
    );
}

#[test]
fn sockaddr_packs_into_48_bits_and_round_trips() {
    let addr = SockAddrV4::new([169, 254, 77, 1], 8080);
    assert_eq!(addr.to_u64(), 0xa9fe_4d01_1f90);
    assert_eq!(SockAddrV4::from_u64(addr.to_u64()), Some(addr));
    assert_eq!(SockAddrV4::from_u64(0), Some(SockAddrV4::any(0)));
    assert!(SockAddrV4::any(80).is_unspecified());
    let max = SockAddrV4::new([255; 4], u16::MAX);
    assert_eq!(max.to_u64(), (1 << 48) - 1);
    assert_eq!(SockAddrV4::from_u64(1 << 48), None);
    assert_eq!(SockAddrV4::from_u64(u64::MAX), None);
    // A packed address is always a success value, never an errno.
    assert_eq!(
        decode_result(encode_result(Ok(max.to_u64()))),
        Ok(max.to_u64())
    );
    // Every value below 2^48 decodes, and re-encodes to itself.
    for value in [1u64, 0xffff, 0x1_0000, 0x7fff_ffff_ffff, 0xdead_beef_cafe] {
        assert_eq!(SockAddrV4::from_u64(value).unwrap().to_u64(), value);
    }
}

#[test]
fn sockaddr_parses_and_prints() {
    let addr = SockAddrV4::parse("169.254.77.250:80").unwrap();
    assert_eq!(addr, SockAddrV4::new([169, 254, 77, 250], 80));
    assert_eq!(format!("{addr}"), "169.254.77.250:80");
    for bad in [
        "",
        "1.2.3.4",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "1.2.3.256:80",
        "1.2.3.4:65536",
        "a.b.c.d:1",
        "1..3.4:5",
        "1.2.3.4:",
        ":80",
        "1.2.3.+4:80",
        "0001.2.3.4:80",
    ] {
        assert_eq!(SockAddrV4::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn small_enums_round_trip_and_refuse_unknown_values() {
    for kind in [SocketKind::Tcp, SocketKind::Udp] {
        assert_eq!(SocketKind::from_u64(kind.to_u64()), Some(kind));
    }
    for how in [Shutdown::Read, Shutdown::Write, Shutdown::Both] {
        assert_eq!(Shutdown::from_u64(how.to_u64()), Some(how));
    }
    for which in [AddrWhich::Local, AddrWhich::Peer] {
        assert_eq!(AddrWhich::from_u64(which.to_u64()), Some(which));
    }
    for opt in [SockOpt::NonBlocking, SockOpt::NoDelay] {
        assert_eq!(SockOpt::from_u64(opt.to_u64()), Some(opt));
    }
    for bad in [0u64, 3, 99, u64::MAX] {
        assert_eq!(SocketKind::from_u64(bad), None);
        assert_eq!(SockOpt::from_u64(bad), None);
    }
    assert_eq!(Shutdown::from_u64(3), None);
    assert_eq!(AddrWhich::from_u64(2), None);
    // Linux's SHUT_RD / SHUT_WR / SHUT_RDWR.
    assert_eq!(
        (
            Shutdown::Read.to_u64(),
            Shutdown::Write.to_u64(),
            Shutdown::Both.to_u64()
        ),
        (0, 1, 2)
    );
}

#[test]
fn poll_records_are_eight_little_endian_bytes() {
    let entry = PollFd {
        fd: 0x0403_0201,
        events: POLLIN | POLLOUT,
        revents: POLLHUP,
    };
    let bytes = entry.encode();
    assert_eq!(bytes, [1, 2, 3, 4, 5, 0, 0x10, 0]);
    assert_eq!(PollFd::decode(bytes), entry);
    // Linux's values, and no two flags share a bit.
    assert_eq!(
        (POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL),
        (1, 4, 8, 16, 32)
    );
    let all = [POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL];
    assert_eq!(all.iter().fold(0, |acc, f| acc | f).count_ones(), 5);
    // Every bit pattern decodes and re-encodes to itself.
    for seed in 0..1000u64 {
        let bytes = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
        assert_eq!(PollFd::decode(bytes).encode(), bytes);
    }
}

#[test]
fn cell_info_round_trips_and_decoding_is_total() {
    let info = CellInfo {
        cell_id: 7,
        node_id: 2,
        memory_limit_bytes: 16 << 20,
        memory_used_bytes: 123 * 4096,
        map_bytes: 64 * 4096,
        node_ip: [169, 254, 77, 2],
        name: ShortName::new("web/1@7"),
        node_name: ShortName::new("worker-2"),
    };
    let bytes = info.encode();
    assert_eq!(bytes.len(), CELL_INFO_BYTES);
    assert_eq!(CellInfo::decode(&bytes), Ok(info));
    assert_eq!(info.name.as_str(), "web/1@7");
    assert_eq!(
        CellInfo::decode(&bytes[..CELL_INFO_BYTES - 1]),
        Err(CellInfoError::Short)
    );
    let mut bad = bytes;
    bad[48] = CELL_INFO_NAME_MAX as u8 + 1;
    assert_eq!(CellInfo::decode(&bad), Err(CellInfoError::BadName));
    let mut bad = bytes;
    bad[49] = 0xff;
    assert_eq!(CellInfo::decode(&bad), Err(CellInfoError::BadName));
    // Total: arbitrary bytes never panic.
    let mut state = 0x1234_5678u64;
    for _ in 0..2000 {
        let mut junk = [0u8; CELL_INFO_BYTES];
        for byte in junk.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *byte = (state >> 56) as u8;
        }
        let _ = CellInfo::decode(&junk);
    }
}

#[test]
fn short_names_cut_on_character_boundaries() {
    let long = "é".repeat(40); // 80 bytes
    let name = ShortName::new(&long);
    assert_eq!(name.as_str().len(), 62, "cut before the split character");
    assert_eq!(ShortName::new("").as_str(), "");
    assert_eq!(
        ShortName::new(&"x".repeat(100)).as_str().len(),
        CELL_INFO_NAME_MAX
    );
}

#[test]
fn map_lengths_round_up_to_pages() {
    assert_eq!(map_len_pages(0), None);
    assert_eq!(map_len_pages(1), Some(1));
    assert_eq!(map_len_pages(PAGE_SIZE), Some(1));
    assert_eq!(map_len_pages(PAGE_SIZE + 1), Some(2));
    assert_eq!(map_len_pages(u64::MAX), None);
    assert_eq!(
        map_len_pages(u64::MAX - PAGE_SIZE + 1),
        Some(u64::MAX / PAGE_SIZE)
    );
}
