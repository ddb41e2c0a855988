//! Reading an option back from a duplicated socket, in the catalog's encoding, and telling
//! whether the socket already has the value asked for.

use crate::pidfd;
use sockwrap_policy::catalog::{Enc, Name16, Opt};
use sockwrap_policy::Value;
use std::os::fd::OwnedFd;

/// The value a kernel option reports, as the catalog's value type.
pub(super) fn decode(enc: Enc, b: &[u8]) -> Option<Value> {
    let int = || Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?));
    Some(match enc {
        Enc::Int | Enc::BufSize => Value::Int(int()? as i64),
        Enc::U32 => Value::Int(int()? as u32 as i64),
        Enc::Bool => Value::Bool(int()? != 0),
        Enc::Str | Enc::StrNul => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            Value::Name(Name16::new(std::str::from_utf8(&b[..end]).ok()?)?)
        }
        Enc::Linger => {
            let on = int()?;
            let secs = i32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
            Value::Linger((on != 0).then_some(secs.clamp(0, u16::MAX as i32) as u16))
        }
    })
}

/// `getsockopt` with a buffer as wide as the encoding the catalog sets: the kernel answers
/// some options in the width it is asked (SO_MAX_PACING_RATE is a u64 when the buffer has
/// room for one, and a u32 clamped to u32::MAX when it has four bytes), so a wider buffer
/// would get bytes the encoding does not read (a 5 GB/s rate read as its low 32 bits).
pub(super) fn read(dup: &OwnedFd, level: i32, name: i32, enc: Enc) -> Option<Value> {
    let mut buf = [0u8; 16];
    let width = match enc {
        Enc::Int | Enc::U32 | Enc::Bool | Enc::BufSize => 4,
        Enc::Linger => 8,
        Enc::Str | Enc::StrNul => buf.len(),
    };
    let n = pidfd::getsockopt(dup, level, name, &mut buf[..width]).ok()?;
    decode(enc, &buf[..n])
}

/// Whether the socket already has `want` (the kernel keeps a TCP socket's ECN bits in its
/// ToS and reports buffer sizes doubled).
pub(super) fn same(
    enc: Enc,
    opt: Opt,
    tcp: bool,
    have: Option<Value>,
    want: Option<Value>,
) -> bool {
    match (have, want) {
        (Some(Value::Int(h)), Some(Value::Int(w))) if opt == Opt::Tos && tcp => h & !3 == w & !3,
        (Some(Value::Int(h)), Some(Value::Int(w))) if enc == Enc::BufSize => h == w * 2,
        (h, w) => h.is_some() && h == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockwrap_policy::catalog::k;

    #[test]
    fn values_decode_as_the_kernel_writes_them() {
        assert_eq!(
            decode(Enc::Int, &0xb8i32.to_ne_bytes()),
            Some(Value::Int(0xb8))
        );
        assert_eq!(
            decode(Enc::Bool, &1i32.to_ne_bytes()),
            Some(Value::Bool(true))
        );
        assert_eq!(
            decode(Enc::U32, &(-1i32).to_ne_bytes()),
            Some(Value::Int(u32::MAX as i64))
        );
        let mut cc = [0u8; 16];
        cc[..5].copy_from_slice(b"cubic");
        assert_eq!(
            decode(Enc::Str, &cc).map(|v| v.to_string()),
            Some("cubic".into())
        );
        let mut l = [0u8; 8];
        l[..4].copy_from_slice(&1i32.to_ne_bytes());
        l[4..].copy_from_slice(&5i32.to_ne_bytes());
        assert_eq!(decode(Enc::Linger, &l), Some(Value::Linger(Some(5))));
        assert_eq!(decode(Enc::Int, &[1, 2]), None);
    }

    #[test]
    fn a_pacing_rate_above_u32_is_read_clamped_not_cut_to_its_low_bits() {
        // The program set its rate as a u64 (5 GB/s: 0x1_2A05_F200); read as the catalog
        // sets it, a u32, the kernel clamps it. Its low 32 bits (705032704) would make a
        // request for 705032704 look already set.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
        let fd = OwnedFd::from(udp);
        let (l, n) = (k::SOL_SOCKET, k::SO_MAX_PACING_RATE);
        let rate = |v: u64| pidfd::setsockopt(&fd, l, n, &v.to_ne_bytes()).is_ok();
        assert!(rate(5_000_000_000));
        assert_eq!(read(&fd, l, n, Enc::U32), Some(Value::Int(u32::MAX as i64)));
        assert!(rate(1_048_576));
        assert_eq!(read(&fd, l, n, Enc::U32), Some(Value::Int(1_048_576)));
    }

    #[test]
    fn already_set_ignores_ecn_bits_and_doubled_buffers() {
        let i = |v| Some(Value::Int(v));
        assert!(same(Enc::Int, Opt::Tos, true, i(0xba), i(0xb8)));
        assert!(!same(Enc::Int, Opt::Tos, false, i(0xba), i(0xb8)));
        assert!(same(Enc::BufSize, Opt::SndBuf, true, i(2048), i(1024)));
        assert!(!same(Enc::Int, Opt::Priority, true, None, i(0)));
    }
}
